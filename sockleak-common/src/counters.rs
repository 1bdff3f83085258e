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
    /// Received fds beyond what one recvmsg/recvmmsg call is inspected for (the per-call
    /// bound that keeps the kernel program's work fixed): those sockets go untracked until
    /// reconciliation finds them.
    ReceivedOverflow = 3,
}

pub const LOSS_CAUSES: u32 = 4;

impl LossCause {
    pub const ALL: [LossCause; LOSS_CAUSES as usize] = [
        LossCause::RingBufFull,
        LossCause::LiveMapFull,
        LossCause::StackLost,
        LossCause::ReceivedOverflow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LossCause::RingBufFull => "ring_buffer_full",
            LossCause::LiveMapFull => "live_map_full",
            LossCause::StackLost => "stack_lost",
            LossCause::ReceivedOverflow => "received_overflow",
        }
    }
}
