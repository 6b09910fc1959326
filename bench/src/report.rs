//! The report's formatting, knowing no scenario: Markdown tables (a head with each column's
//! alignment, rows of cells), number formats, the SVG chart of CPU per call, and putting one
//! section in place of its old self in results.md.

use std::fmt::{self, Write as _};

/// How a column is aligned: words to the left, figures to the right.
#[derive(Clone, Copy, PartialEq)]
pub enum Align {
    Left,
    Right,
}

/// A Markdown table's head: the column names, then the line that aligns them.
pub fn head(out: &mut String, columns: &[(&str, Align)]) -> fmt::Result {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    row(out, &names)?;
    let rules: Vec<&str> = columns
        .iter()
        .map(|(_, align)| match align {
            Align::Left => "---",
            Align::Right => "---:",
        })
        .collect();
    row(out, &rules)
}

/// One row of a Markdown table; an empty cell is written as `| |`.
pub fn row<S: AsRef<str>>(out: &mut String, cells: &[S]) -> fmt::Result {
    write!(out, "|")?;
    for cell in cells {
        match cell.as_ref() {
            "" => write!(out, " |")?,
            cell => write!(out, " {cell} |")?,
        }
    }
    writeln!(out)
}

/// Milliseconds with the digits that matter: 3 decimals below 10, none from 100, commas from
/// 1,000.
pub fn ms(v: f64) -> String {
    if v >= 1000.0 {
        count(v.round() as usize)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Bytes as MB (10^6 bytes), one decimal.
pub fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A count with commas between thousands.
pub fn count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether a bound is met, in bold.
pub fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

/// One group of bars in the chart: its title and each contender's CPU per call relative to the
/// native command.
pub struct ChartGroup {
    pub title: String,
    pub bars: Vec<(&'static str, f64)>,
}

/// The SVG chart of CPU per call relative to the native command, a group at a time: the
/// module's commands blue, Lua red, native commands grey.
pub fn svg_chart(results: &[ChartGroup]) -> String {
    let row_h = 18.0;
    let label_w = 330.0;
    let bar_w = 420.0;
    let max_ratio = results
        .iter()
        .flat_map(|g| g.bars.iter().map(|(_, r)| *r))
        .filter(|r| r.is_finite())
        .fold(1.0f64, f64::max)
        .ceil();
    let rows: usize = results.iter().map(|g| g.bars.len() + 1).sum();
    let height = 60.0 + rows as f64 * row_h;
    let width = label_w + bar_w + 80.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">Server CPU per call, relative to the native command (lower is better)</text>"#
    );
    let x0 = label_w;
    let one = x0 + bar_w / max_ratio;
    let _ = writeln!(
        s,
        r#"<line x1="{one}" y1="30" x2="{one}" y2="{}" stroke="black" stroke-dasharray="3,3"/>"#,
        height - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="42" font-size="10">1.0x native</text>"#,
        one + 3.0
    );
    let mut y = 50.0;
    for g in results {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-weight="bold">{}</text>"#,
            y + 12.0,
            g.title
        );
        y += row_h;
        for &(name, r) in &g.bars {
            let w = if r.is_finite() {
                bar_w * r / max_ratio
            } else {
                0.0
            };
            let color = if name.starts_with("LOCK.") || name.starts_with("STOCK.") {
                "#2a7ab0"
            } else if name.starts_with("Lua") {
                "#c0504d"
            } else {
                "#888888"
            };
            let _ = writeln!(
                s,
                r#"<text x="20" y="{}">{}</text>"#,
                y + 12.0,
                name.replace('&', "&amp;").replace('<', "&lt;")
            );
            let _ = writeln!(
                s,
                r#"<rect x="{x0}" y="{}" width="{w:.1}" height="{}" fill="{color}"/>"#,
                y + 2.0,
                row_h - 4.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}">{r:.2}x</text>"#,
                x0 + w + 4.0,
                y + 12.0
            );
            y += row_h;
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// `text` with its `## Big ledger` section replaced by `section` (appended when it has none).
pub fn splice(text: &str, section: &str) -> String {
    let Some(start) = text.find("## Big ledger\n") else {
        let mut out = text.trim_end().to_string();
        out.push_str("\n\n");
        out.push_str(section);
        return out;
    };
    let end = text[start + 1..]
        .find("\n## ")
        .map_or(text.len(), |i| start + 1 + i + 1);
    format!("{}{}{}", &text[..start], section, &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_has_its_head_alignment_and_empty_cells() {
        let mut out = String::new();
        head(&mut out, &[("what", Align::Left), ("ms", Align::Right)]).unwrap();
        row(&mut out, &["a", "1.5"]).unwrap();
        row(&mut out, &["b".to_string(), String::new()]).unwrap();
        assert_eq!(out, "| what | ms |\n| --- | ---: |\n| a | 1.5 |\n| b | |\n");
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(999), "999");
        assert_eq!(ms(1234.4), "1,234");
        assert_eq!(ms(123.4), "123");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(1.2345), "1.234");
        assert_eq!(mb(1_260_000), "1.3 MB");
    }

    #[test]
    fn a_section_is_replaced_or_appended() {
        let doc = "# t\n\n## A\n\na\n\n## Big ledger\n\nold\n\n## Z\n\nz\n";
        assert_eq!(
            splice(doc, "## Big ledger\n\nnew\n\n"),
            "# t\n\n## A\n\na\n\n## Big ledger\n\nnew\n\n## Z\n\nz\n"
        );
        assert_eq!(
            splice("# t\n\n## A\n\na\n", "## Big ledger\n\nnew\n"),
            "# t\n\n## A\n\na\n\n## Big ledger\n\nnew\n"
        );
        assert_eq!(
            splice("# t\n\n## Big ledger\n\nold\n", "## Big ledger\n\nnew\n"),
            "# t\n\n## Big ledger\n\nnew\n"
        );
    }
}
