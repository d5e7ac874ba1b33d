//! Queue names: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.

/// The rule as a regular expression, for the API description (`/openapi.json`).
pub const QUEUE_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

/// Longest accepted queue name, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 128;

/// Longest consumer name (`X-Memq-Consumer`): a DNS name's length, so a pod name fits.
pub const MAX_CONSUMER_NAME: usize = 253;

/// Checks a consumer name (`X-Memq-Consumer`): 1 to [`MAX_CONSUMER_NAME`] bytes of printable
/// ASCII.
pub fn validate_consumer_name(name: &str) -> Result<(), String> {
    consumer_name(name.as_bytes()).map(drop)
}

/// A consumer name from raw bytes (a header's), checked as [`validate_consumer_name`] does; the
/// error names the first byte that is not printable ASCII.
pub fn consumer_name(bytes: &[u8]) -> Result<&str, String> {
    if bytes.is_empty() || bytes.len() > MAX_CONSUMER_NAME {
        return Err(format!(
            "a consumer name is 1 to {MAX_CONSUMER_NAME} bytes, got {}",
            bytes.len()
        ));
    }
    if let Some(bad) = bytes.iter().find(|b| !(0x20..0x7f).contains(*b)) {
        return Err(format!(
            "a consumer name is printable ASCII; byte 0x{bad:02x} is not"
        ));
    }
    Ok(std::str::from_utf8(bytes).expect("printable ASCII is UTF-8"))
}

/// Checks a queue name against the contract's rule, saying what is wrong when it fails.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Err("queue name is empty".into());
    };
    if bytes.len() > MAX_QUEUE_NAME_LEN {
        return Err(format!(
            "queue name is {} bytes long; at most {MAX_QUEUE_NAME_LEN} are allowed",
            bytes.len()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "queue name {name:?} must start with a letter or digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "queue name {name:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_of_the_contract() {
        for ok in ["keygen", "a", "A-b_c.d", "0queue", &"x".repeat(128)] {
            assert!(validate_queue_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_names_outside_the_contract() {
        for bad in [
            "",
            ".x",
            "-x",
            "_x",
            "a b",
            "../x",
            "a/b",
            "köln",
            &"x".repeat(129),
        ] {
            assert!(validate_queue_name(bad).is_err(), "{bad}");
        }
    }
}
