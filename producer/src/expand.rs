//! Brace ranges in item arguments: `work-item-{0..99}`, zero-padded `{000..999}`, stepped
//! `{0..100..10}`, descending `{9..0}`, several per argument (`{0..9}-{0..9}`).
//!
//! The shell usually expands these itself; we expand them too so that a quoted pattern, an env
//! var or a Kubernetes `args:` list (no shell there) gives the same items. Expansion is lazy: a
//! pattern of a million items costs one string at a time, never a million-entry vector.
//!
//! Only `{...}` with `..` inside is range syntax, and it must then be valid: a typo such as
//! `{1..x}` is an error rather than a literal item, because silently enqueueing `item-{1..x}`
//! once instead of the intended range is the worse outcome. Braces without `..` (e.g. JSON) stay
//! literal.

/// A range that does not parse, with the argument it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid range {{{range}}} in {arg:?}: {why}")]
pub struct RangeError {
    /// The whole argument.
    pub arg: String,
    /// The text between the braces.
    pub range: String,
    /// What is wrong with it.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Range(Range),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    start: i64,
    /// Signed: negative for descending ranges.
    step: i64,
    count: u64,
    /// Zero-padded to this many characters (sign included), 0 for no padding.
    width: usize,
}

impl Range {
    fn value(&self, index: u64) -> i64 {
        // In i128 because `step * index` alone can pass i64 even when the result lies between
        // the endpoints; the result itself always fits.
        (i128::from(self.start) + i128::from(self.step) * i128::from(index)) as i64
    }
}

/// One argument, parsed into literal text and ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<Part>,
    len: u64,
}

impl Pattern {
    /// An argument taken as it is (`--no-expand`).
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Literal(text.to_string())],
            len: 1,
        }
    }

    /// Parses the ranges of one argument.
    pub fn parse(arg: &str) -> Result<Self, RangeError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = arg;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after.find('}');
            let inner = close.map(|c| &after[..c]);
            match inner {
                Some(inner) if inner.contains("..") && !inner.contains('{') => {
                    literal.push_str(&rest[..open]);
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    let range = parse_range(inner).map_err(|why| RangeError {
                        arg: arg.to_string(),
                        range: inner.to_string(),
                        why,
                    })?;
                    parts.push(Part::Range(range));
                    rest = &after[inner.len() + 1..];
                }
                _ => {
                    literal.push_str(&rest[..=open]);
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() || parts.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let len = parts.iter().try_fold(1u64, |acc, p| match p {
            Part::Literal(_) => Some(acc),
            Part::Range(r) => acc.checked_mul(r.count),
        });
        let len = len.ok_or_else(|| RangeError {
            arg: arg.to_string(),
            range: String::from(".."),
            why: "expands to more items than can be counted".into(),
        })?;
        Ok(Self { parts, len })
    }

    /// How many items the pattern expands to.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the pattern expands to nothing (never: every range has at least one value).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The items, leftmost range varying slowest (as the shell orders them).
    pub fn iter(&self) -> Expand<'_> {
        let ranges = self
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Range(_)))
            .count();
        Expand {
            pattern: self,
            indices: vec![0; ranges],
            done: self.len == 0,
        }
    }
}

fn parse_int(text: &str, what: &str) -> Result<i64, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {text:?} is not a whole number"));
    }
    text.parse()
        .map_err(|_| format!("{what} {text:?} is too large"))
}

fn is_zero_padded(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    digits.len() > 1 && digits.starts_with('0')
}

fn parse_range(inner: &str) -> Result<Range, String> {
    let fields: Vec<&str> = inner.split("..").collect();
    let (start_text, end_text, step_text) = match fields.as_slice() {
        [s, e] => (*s, *e, None),
        [s, e, step] => (*s, *e, Some(*step)),
        _ => return Err("expected {START..END} or {START..END..STEP}".into()),
    };
    let start = parse_int(start_text, "start")?;
    let end = parse_int(end_text, "end")?;
    let step = match step_text {
        Some(text) => parse_int(text, "step")?.unsigned_abs(),
        None => 1,
    };
    if step == 0 {
        return Err("step must not be 0".into());
    }
    // As in bash, the direction comes from START and END, not from the step's sign.
    let span = (i128::from(end) - i128::from(start)).unsigned_abs();
    let count = u64::try_from(span / u128::from(step) + 1)
        .map_err(|_| "range has too many values".to_string())?;
    let step = i64::try_from(step).map_err(|_| "step is too large".to_string())?;
    let step = if end < start { -step } else { step };
    let width = if is_zero_padded(start_text) || is_zero_padded(end_text) {
        start_text.len().max(end_text.len())
    } else {
        0
    };
    Ok(Range {
        start,
        step,
        count,
        width,
    })
}

/// Iterator over the items of a [`Pattern`].
#[derive(Debug)]
pub struct Expand<'a> {
    pattern: &'a Pattern,
    indices: Vec<u64>,
    done: bool,
}

impl Iterator for Expand<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        let mut out = String::new();
        let mut ranges = Vec::with_capacity(self.indices.len());
        for part in &self.pattern.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Range(range) => {
                    let value = range.value(self.indices[ranges.len()]);
                    ranges.push(range);
                    if range.width > 0 {
                        out.push_str(&format!("{value:0width$}", width = range.width));
                    } else {
                        out.push_str(&value.to_string());
                    }
                }
            }
        }
        // Odometer: bump the rightmost range, carrying to the left.
        self.done = true;
        for (index, range) in self.indices.iter_mut().zip(&ranges).rev() {
            *index += 1;
            if *index < range.count {
                self.done = false;
                break;
            }
            *index = 0;
        }
        Some(out)
    }
}

/// What every argument must satisfy, whatever it is; panics otherwise. Shared by the property
/// test below and the fuzz target (`fuzz/fuzz_targets/brace_expand.rs`).
#[doc(hidden)]
pub fn check_invariants(arg: &str) {
    let Ok(pattern) = Pattern::parse(arg) else {
        // Only range syntax can be wrong.
        assert!(arg.contains("{") && arg.contains(".."), "{arg:?} refused");
        return;
    };
    assert!(!pattern.is_empty(), "{arg:?} expands to nothing");
    if !arg.contains('{') {
        assert_eq!(pattern.iter().collect::<Vec<_>>(), [arg]);
        return;
    }
    // Counted exactly, without materializing huge ones: walk a bounded prefix.
    const WALK: u64 = 10_000;
    let walked = pattern.iter().take(WALK as usize).count() as u64;
    assert_eq!(
        walked,
        pattern.len().min(WALK),
        "{arg:?}: count and iteration disagree"
    );
    // Literal text outside ranges is kept: every item is at least as long as the literals.
    let first = pattern.iter().next().expect("one item");
    let literal: usize = pattern
        .parts
        .iter()
        .map(|p| match p {
            Part::Literal(t) => t.len(),
            Part::Range(_) => 0,
        })
        .sum();
    assert!(first.len() > literal || pattern.parts.iter().all(|p| matches!(p, Part::Literal(_))));
    if pattern.len() <= WALK {
        // The last item is the one the counting says.
        let last = pattern.iter().last().expect("one item");
        let ranges: Vec<&Range> = pattern
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Range(r) => Some(r),
                Part::Literal(_) => None,
            })
            .collect();
        let mut want = String::new();
        let mut i = 0;
        for part in &pattern.parts {
            match part {
                Part::Literal(t) => want.push_str(t),
                Part::Range(r) => {
                    let v = r.value(r.count - 1);
                    want.push_str(&format!("{v:0width$}", width = ranges[i].width));
                    i += 1;
                }
            }
        }
        assert_eq!(last, want, "{arg:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(arg: &str) -> Vec<String> {
        Pattern::parse(arg).unwrap().iter().collect()
    }

    #[test]
    fn plain_arguments_are_one_item() {
        assert_eq!(expand("work-item-7"), ["work-item-7"]);
        assert_eq!(expand(""), [""]);
    }

    #[test]
    fn expands_the_seed_range() {
        let items = expand("work-item-{0..99}");
        assert_eq!(items.len(), 100);
        assert_eq!(items[0], "work-item-0");
        assert_eq!(items[99], "work-item-99");
        assert_eq!(Pattern::parse("work-item-{0..99}").unwrap().len(), 100);
    }

    #[test]
    fn zero_padding_follows_the_widest_endpoint() {
        let items = expand("{000..999}");
        assert_eq!(items.len(), 1000);
        assert_eq!(items[0], "000");
        assert_eq!(items[42], "042");
        assert_eq!(expand("{01..3}"), ["01", "02", "03"]);
        assert_eq!(expand("{-05..-03}"), ["-05", "-04", "-03"]);
    }

    #[test]
    fn descending_and_stepped_ranges() {
        assert_eq!(expand("{3..1}"), ["3", "2", "1"]);
        assert_eq!(expand("{0..10..4}"), ["0", "4", "8"]);
        assert_eq!(expand("{10..0..-5}"), ["10", "5", "0"]);
        assert_eq!(expand("{-1..1}"), ["-1", "0", "1"]);
    }

    #[test]
    fn several_ranges_multiply_leftmost_slowest() {
        assert_eq!(
            expand("a{0..1}-{1..2}z"),
            ["a0-1z", "a0-2z", "a1-1z", "a1-2z"]
        );
        assert_eq!(Pattern::parse("{0..9}{0..9}{0..9}").unwrap().len(), 1000);
    }

    #[test]
    fn braces_without_dots_stay_literal() {
        assert_eq!(expand(r#"{"job":1}"#), [r#"{"job":1}"#]);
        assert_eq!(expand("a{b}c{"), ["a{b}c{"]);
        assert_eq!(expand("x{0..1"), ["x{0..1"]);
        assert_eq!(expand("{{0..1}"), ["{0", "{1"]);
    }

    #[test]
    fn invalid_ranges_are_errors_that_name_the_argument() {
        for bad in [
            "item-{1..x}",
            "{..3}",
            "{1..}",
            "{1..2..0}",
            "{1..2..3..4}",
            "{a..z}",
        ] {
            let err = Pattern::parse(bad).unwrap_err();
            assert_eq!(err.arg, bad);
            assert!(err.to_string().starts_with("invalid range {"), "{err}");
        }
    }

    #[test]
    fn huge_ranges_are_counted_not_materialized() {
        let p = Pattern::parse("{0..999999999}{0..9}").unwrap();
        assert_eq!(p.len(), 10_000_000_000);
        assert_eq!(p.iter().nth(11).unwrap(), "11");
        let too_many = "{0..9223372036854775807}{0..9223372036854775807}";
        assert!(Pattern::parse(too_many).is_err());
        assert!(Pattern::parse("{-9223372036854775808..9223372036854775807}").is_err());
    }

    #[test]
    fn extreme_endpoints_do_not_overflow() {
        let max = i64::MAX;
        assert_eq!(
            expand(&format!("{{{}..{max}}}", max - 1)),
            [(max - 1).to_string(), max.to_string()]
        );
        let min = i64::MIN;
        assert_eq!(
            expand(&format!("{{{}..{min}}}", min + 1)),
            [(min + 1).to_string(), min.to_string()]
        );
    }

    #[test]
    fn any_argument_expands_or_fails_cleanly_a_few_thousand_cases() {
        const PIECES: &[&str] = &[
            "{",
            "}",
            "..",
            ".",
            "-",
            "0",
            "1",
            "7",
            "00",
            "09",
            "10",
            "99",
            "x",
            "item-",
            "é",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551616",
            "{{",
            "}}",
        ];
        for seed in 1..=5000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let n = rng.usize(..12);
            let arg: String = (0..n).map(|_| PIECES[rng.usize(..PIECES.len())]).collect();
            let result = std::panic::catch_unwind(|| check_invariants(&arg));
            assert!(result.is_ok(), "seed {seed}: {arg:?}");
        }
    }
}
