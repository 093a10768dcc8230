//! Prometheus text exposition of the control plane's counters: one writer
//! for every service (SIP, CDR, verification), so they all print the same
//! `# HELP` / `# TYPE` / value triple.

use std::fmt::Write as _;

/// Appends metric `name` (full name, `kordon_` prefix included) of `kind`
/// (`counter`, `gauge`) with its help text and value.
pub fn write(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_help_type_and_value() {
        let mut out = String::new();
        super::write(&mut out, "kordon_x_total", "counter", "things", 3);
        assert_eq!(
            out,
            "# HELP kordon_x_total things\n# TYPE kordon_x_total counter\nkordon_x_total 3\n"
        );
    }
}
