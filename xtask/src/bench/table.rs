//! The table's row format and the arithmetic of its figures: ratios, verdicts, fixed decimals
//! (rounded as C's printf rounds), and the header's facts read from /proc.

/// One row: `%-16s %-46s %12s %-8s %12s %7s  %-22s %s` (key, what, value, unit, baseline,
/// ratio, target, verdict); a cell wider than its column pushes the rest right.
pub fn row([key, what, value, unit, baseline, ratio, target, verdict]: [&str; 8]) -> String {
    format!(
        "{key:<16} {what:<46} {value:>12} {unit:<8} {baseline:>12} {ratio:>7}  {target:<22} {verdict}"
    )
}

/// `x` with `decimals` decimals, like printf's `%.Nf` (the exact value rounded, ties to even).
pub fn fixed(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}

/// `x` rounded to a whole number, as `%.0f` rounds it; 0 for what is not a finite, positive
/// number.
pub fn whole(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        fixed(x, 0).parse().unwrap_or(0)
    } else {
        0
    }
}

/// `a / b` with 2 decimals, or `-` when `b` is not above 0.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { fixed(a / b, 2) } else { "-".into() }
}

/// The number a cell shows, read as awk reads a string: its leading number, or 0 (`-`).
pub fn num(cell: &str) -> f64 {
    let cell = cell.trim_start();
    let mut end = 0;
    let mut seen_dot = false;
    for (i, c) in cell.char_indices() {
        match c {
            '0'..='9' => end = i + 1,
            '.' if !seen_dot => seen_dot = true,
            '-' | '+' if i == 0 => {}
            _ => break,
        }
    }
    cell[..end].parse().unwrap_or(0.0)
}

/// How a figure is held to its target.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `>=`
    AtLeast,
    /// `<=`
    AtMost,
}

/// `ok` when `value` meets `limit` (both as the table shows them), else `MISSED`.
pub fn meets(value: f64, op: Op, limit: f64) -> &'static str {
    let ok = match op {
        Op::AtLeast => value >= limit,
        Op::AtMost => value <= limit,
    };
    if ok { "ok" } else { "MISSED" }
}

/// The verdict on a ratio cell (`0.80`, or `-` which is 0).
pub fn meets_ratio(ratio: &str, op: Op, limit: f64) -> &'static str {
    meets(num(ratio), op, limit)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `secs` since the Unix epoch.
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days_from_civil inverted (civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The first `model name` of /proc/cpuinfo (empty when there is none).
pub fn cpu_model(cpuinfo: &str) -> &str {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(": ").nth(1))
        .unwrap_or("")
}

/// MemTotal of /proc/meminfo as `N GiB`.
pub fn mem_total(meminfo: &str) -> String {
    let kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .map_or(0.0, num);
    format!("{} GiB", fixed(kb / 1_048_576.0, 0))
}

/// VmRSS of a /proc/PID/status, in kB.
pub fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time a process has used, user plus system, in clock ticks (USER_HZ, 100 a second on
/// Linux), from its /proc/PID/stat (fields 14 and 15; counted after the `)` that closes the
/// command name, which may hold spaces).
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The soft limit of open files in a /proc/PID/limits (`unlimited`: u64::MAX).
pub fn open_files(limits: &str) -> Option<u64> {
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// Established TCP connections whose local port is `port`, in a /proc/net/tcp or tcp6 table
/// (what `ss -Htn state established "( sport = :PORT )"` lists).
pub fn established(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            state == Some("01")
                && local
                    .and_then(|l| l.rsplit_once(':'))
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_from_proc_stat() {
        let stat = "4242 (queue server) S 1 4242 4242 0 -1 4194560 9071 0 0 0 1234 567 0 0 20 0 \
                    5 0 1000 100000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0";
        assert_eq!(cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(cpu_ticks(""), None);
    }

    #[test]
    fn rows_have_the_fixed_columns() {
        assert_eq!(
            row([
                "enqueue_empty",
                "single enqueue, from an empty queue",
                "124097",
                "req/s",
                "144410",
                "0.86",
                ">= 0.80 x baseline",
                "ok"
            ]),
            "enqueue_empty    single enqueue, from an empty queue                  124097 req/s          144410    0.86  >= 0.80 x baseline     ok"
        );
        // A cell wider than its column is not cut.
        assert_eq!(
            row([
                "longpoll_10k",
                "RSS holding 10000 idle long polls (base: 10000)",
                "180.5",
                "MB",
                "180.4",
                "1.00",
                "10,000 held, < 200 MB",
                "ok"
            ]),
            "longpoll_10k     RSS holding 10000 idle long polls (base: 10000)        180.5 MB              180.4    1.00  10,000 held, < 200 MB  ok"
        );
        assert_eq!(
            row([
                "rss_beyond_body",
                "  of which beyond the body",
                "56.9",
                "B/item",
                "-",
                "-",
                "<= 64 B/item",
                "ok"
            ]),
            "rss_beyond_body    of which beyond the body                             56.9 B/item              -       -  <= 64 B/item           ok"
        );
    }

    #[test]
    fn fixed_rounds_as_printf() {
        assert_eq!(fixed(0.805, 2), "0.81"); // 0.805 is 0.80500000000000004885 in binary
        assert_eq!(fixed(0.125, 2), "0.12"); // an exact tie: to even, as glibc
        assert_eq!(fixed(2.5, 0), "2");
        assert_eq!(fixed(3.5, 0), "4");
        assert_eq!(fixed(72.94, 1), "72.9");
        assert_eq!(fixed(4.2, 2), "4.20");
        assert_eq!(whole(124096.5), 124096);
        assert_eq!(whole(124097.51), 124098);
        assert_eq!(whole(f64::NAN), 0);
        assert_eq!(whole(f64::INFINITY), 0);
    }

    #[test]
    fn ratios_and_verdicts() {
        assert_eq!(ratio(124097.0, 144410.0), "0.86");
        assert_eq!(ratio(1.0, 0.0), "-");
        assert_eq!(ratio(1.0, -1.0), "-");
        assert_eq!(ratio(4347826.0, 144410.0), "30.11");
        // The verdict is on the ratio as shown: 0.7996 shows as 0.80, which meets 0.80.
        let r = ratio(79.96, 100.0);
        assert_eq!(r, "0.80");
        assert_eq!(meets_ratio(&r, Op::AtLeast, 0.80), "ok");
        assert_eq!(meets_ratio("0.79", Op::AtLeast, 0.80), "MISSED");
        assert_eq!(meets_ratio("-", Op::AtLeast, 0.40), "MISSED");
        assert_eq!(meets(4.21, Op::AtMost, 5.0), "ok");
        assert_eq!(meets(5.0, Op::AtMost, 5.0), "ok");
        assert_eq!(meets(5.01, Op::AtMost, 5.0), "MISSED");
        assert_eq!(meets(14_860_000.0, Op::AtLeast, 2_000_000.0), "ok");
        assert_eq!(meets(num("2.00"), Op::AtMost, 2.0), "ok");
    }

    #[test]
    fn cells_read_as_numbers() {
        assert_eq!(num("0.80"), 0.8);
        assert_eq!(num("-"), 0.0);
        assert_eq!(num(""), 0.0);
        assert_eq!(num("180.5"), 180.5);
        assert_eq!(num("-16.5"), -16.5);
        assert_eq!(num("12abc"), 12.0);
        assert_eq!(num(" 7 "), 7.0);
        assert_eq!(num("1.2.3"), 1.2);
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_621_224), "2026-11-25T15:40:24Z");
        assert_eq!(utc_timestamp(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn proc_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\
                       processor\t: 1\nmodel name\t: Other\n";
        assert_eq!(cpu_model(cpuinfo), "Intel(R) Xeon(R) Processor");
        assert_eq!(cpu_model("processor\t: 0\n"), "");
        let meminfo = "MemTotal:       24600000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), "23 GiB");
        assert_eq!(mem_total("MemTotal:       25165824 kB\n"), "24 GiB");
        let status =
            "Name:\tqueue-server\nVmPeak:\t  300000 kB\nVmRSS:\t  184832 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(vm_rss_kb(status), Some(184_832));
        assert_eq!(vm_rss_kb("Name:\tx\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 1048576              files     \n";
        assert_eq!(open_files(limits), Some(1024));
        assert_eq!(
            open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            Some(u64::MAX)
        );
    }

    #[test]
    fn established_connections() {
        // Port 0x9C40 = 40000: two established server-side sockets, one listening, one on the
        // client side (remote port 40000), one in TIME_WAIT.
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            \x20  0: 0100007F:9C40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n\
            \x20  1: 0100007F:9C40 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1\n\
            \x20  2: 0100007F:D2F0 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1\n\
            \x20  3: 0100007F:9C40 0100007F:D2F1 01 00000000:00000000 00:00000000 00000000  1000        0 4 1 0 20 4 30 10 -1\n\
            \x20  4: 0100007F:9C40 0100007F:D2F2 06 00000000:00000000 03:00000F8C 00000000     0        0 0 3 0\n";
        assert_eq!(established(tcp, 40000), 2);
        assert_eq!(established(tcp, 53_999), 0);
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            \x20  0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:D2F3 01 00000000:00000000 00:00000000 00000000  1000        0 5 1 0 20 4 30 10 -1\n";
        assert_eq!(established(tcp6, 40000), 1);
    }
}
