//! Property tests (proptest) over everything that parses input sockleak does not control:
//! /proc and /sys text, tracefs formats, kernel event sequences. The same functions are cargo
//! fuzz targets in fuzz/ for longer runs.

use proptest::prelude::*;
use sockleak_common::{
    event::Event,
    socket::{ENDPOINT_ADDR_LEN, Endpoint, Origin},
};

use crate::{host::procfs, model::names};

proptest! {
    #[test]
    fn proc_and_sys_parsers_never_panic(s in ".{0,400}") {
        crate::exercise_parsers(&s);
    }

    #[test]
    fn a_proxy_password_never_survives_masking(
        scheme in "(|http://|socks5://|https://)", user in "[a-z0-9%@:/?#]{0,12}",
        pw in "[A-Za-z0-9%@:/?#!]{4,16}", host in r"(127\.0\.0\.1|proxy\.corp|\[::1\])",
        port in any::<u16>(),
    ) {
        let value = format!("{scheme}{user}:{pw}@{host}:{port}");
        let shown = crate::host::redact::env_value("HTTPS_PROXY", &value);
        // Exactly the host and port survive (a plain "does not contain" could be fooled by a
        // password that happens to be part of the host).
        prop_assert_eq!(&shown, &format!("{scheme}***@{host}:{port}"));
        let masked_list = crate::host::redact::env_value("NO_PROXY", &format!("a,{value},b"));
        prop_assert_eq!(masked_list, format!("a,{scheme}***@{host}:{port},b"));
        let expected_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        prop_assert_eq!(crate::host::redact::host_port(&shown), Some((expected_host, port)));
    }

    #[test]
    fn structured_proc_lines(
        name in "[a-z ()]{0,20}", fields in proptest::collection::vec(any::<i64>(), 0..30),
        soft in any::<u64>(), hard in any::<u64>(),
    ) {
        let stat = format!(
            "7 ({name}) {}",
            fields.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(" ")
        );
        let _ = procfs::parse_stat_start_time(&stat);
        let limits = format!("Max open files            {soft}                 {hard}               files\n");
        prop_assert_eq!(
            procfs::parse_fd_limit(&limits),
            Some(procfs::FdLimit { soft, hard })
        );
        let maps = format!("{soft:x}-{hard:x} r-xp 00000000 08:01 1 /x/{name}\n");
        let _ = procfs::parse_maps(&maps);
    }

    #[test]
    fn endpoints_never_panic(family in any::<u16>(), port in any::<u16>(),
                             addr in proptest::array::uniform32(any::<u8>())) {
        let ep = Endpoint { family, port, addr };
        let _ = names::endpoint(&ep);
        let _ = names::socket_addr(&ep);
        prop_assert_eq!(addr.len(), ENDPOINT_ADDR_LEN);
    }

    /// Any event sequence, however inconsistent (see `exercise_tracker`; the model-based
    /// properties are in tracker/tests.rs).
    #[test]
    fn tracker_survives_any_events(events in proptest::collection::vec(
        (2u8..=11, 1u32..4, 0i32..12, 0i64..12, any::<u16>(), any::<u64>()), 0..200)
    ) {
        crate::exercise_tracker(events.into_iter().enumerate().map(
            |(i, (kind, tgid, fd, arg, flags, arg2))| {
                let mut ev = Event::EMPTY;
                ev.ts_ns = i as u64;
                ev.kind = kind;
                ev.tgid = tgid;
                ev.tid = tgid;
                ev.fd = fd;
                ev.arg = arg;
                ev.arg2 = arg2;
                ev.flags = flags;
                ev.record.origin = Origin::Socket as u8;
                ev
            },
        ));
    }
}
