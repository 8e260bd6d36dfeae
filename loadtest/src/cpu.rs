//! CPU time of processes, read from `/proc/<pid>/stat`: user plus system time of every
//! thread, which is what a process costs the machine.

use std::time::Duration;

/// Clock ticks per second of `/proc` times. Linux fixes it at 100 for every program it
/// shows them to (`USER_HZ`, `getconf CLK_TCK`), whatever the kernel's own tick.
const TICKS_PER_SECOND: u64 = 100;

/// CPU time used so far by process `pid`; `None` where `/proc` cannot tell (another system,
/// a process that is gone).
pub(crate) fn of_process(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// CPU time used so far by this process.
pub(crate) fn of_self() -> Option<Duration> {
    of_process(std::process::id())
}

/// `utime + stime` of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Fields 3.. follow the name; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1_000 / TICKS_PER_SECOND,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_time_are_read_past_a_name_with_spaces() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1000 0 0";
        assert_eq!(parse_stat(stat), Some(Duration::from_millis(3_250)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(of_self().is_some());
    }
}
