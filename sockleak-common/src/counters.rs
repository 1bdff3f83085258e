//! Per-CPU counters of what the kernel side could not record.

/// Index into the LOSSES per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossCause {
    /// The ring buffer had no room for an event.
    RingBufFull = 0,
    /// The live-socket map was full: a socket went untracked.
    LiveMapFull = 1,
    /// A user stack could not be stored (stack map full or bucket collision).
    StackLost = 2,
}

pub const LOSS_CAUSES: u32 = 3;

impl LossCause {
    pub const ALL: [LossCause; LOSS_CAUSES as usize] = [
        LossCause::RingBufFull,
        LossCause::LiveMapFull,
        LossCause::StackLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LossCause::RingBufFull => "ring_buffer_full",
            LossCause::LiveMapFull => "live_map_full",
            LossCause::StackLost => "stack_lost",
        }
    }
}
