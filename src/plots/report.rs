//! A self-contained HTML report: text, tables and pictures in one file,
//! the pictures embedded as `data:` URIs, so that it opens in any browser
//! with no network and no other file.

use std::fmt::Write;
use std::path::Path;

use super::{RgbImage, png_bytes};
use crate::Result;

/// One block of a [`Report`].
enum Block {
    Heading(String),
    Paragraph(String),
    Preformatted(String),
    Table(Vec<(String, String)>),
    Picture { alt: String, png: Vec<u8> },
}

/// An HTML page built block by block.
///
/// ```
/// use convnet::plots::report::Report;
///
/// let mut report = Report::new("LeNet on MNIST");
/// report.heading("Scores");
/// report.table([("test accuracy", "0.9871")]);
/// report.picture("activations", &convnet::plots::activations()?)?;
/// let html = report.to_html();
/// assert!(html.contains("<img alt=\"activations\" src=\"data:image/png;base64,iVBOR"));
/// assert!(!html.contains("http"));
/// # Ok::<(), convnet::Error>(())
/// ```
pub struct Report {
    title: String,
    blocks: Vec<Block>,
}

impl Report {
    /// An empty report with this title.
    pub fn new(title: impl Into<String>) -> Self {
        Report {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    /// A section heading.
    pub fn heading(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Heading(text.into()));
        self
    }

    /// A paragraph of text.
    pub fn paragraph(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    /// Text shown as it is, in a fixed-width font (a model summary).
    pub fn preformatted(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Preformatted(text.into()));
        self
    }

    /// A two-column table of names and values.
    pub fn table<K: Into<String>, V: Into<String>>(
        &mut self,
        rows: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        let rows = rows.into_iter().map(|(k, v)| (k.into(), v.into()));
        self.blocks.push(Block::Table(rows.collect()));
        self
    }

    /// A picture, embedded as PNG; `alt` describes it.
    pub fn picture(&mut self, alt: impl Into<String>, picture: &RgbImage) -> Result<&mut Self> {
        let png = png_bytes(picture)?;
        self.blocks.push(Block::Picture {
            alt: alt.into(),
            png,
        });
        Ok(self)
    }

    /// The page.
    pub fn to_html(&self) -> String {
        let mut html = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n");
        html += "<meta charset=\"utf-8\">\n";
        html += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
        let _ = writeln!(html, "<title>{}</title>", escape(&self.title));
        html += STYLE;
        html += "</head>\n<body>\n";
        let _ = writeln!(html, "<h1>{}</h1>", escape(&self.title));
        for block in &self.blocks {
            match block {
                Block::Heading(text) => {
                    let _ = writeln!(html, "<h2>{}</h2>", escape(text));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(html, "<p>{}</p>", escape(text));
                }
                Block::Preformatted(text) => {
                    let _ = writeln!(html, "<pre>{}</pre>", escape(text));
                }
                Block::Table(rows) => {
                    html += "<table>\n";
                    for (name, value) in rows {
                        let _ = writeln!(
                            html,
                            "<tr><th>{}</th><td>{}</td></tr>",
                            escape(name),
                            escape(value)
                        );
                    }
                    html += "</table>\n";
                }
                Block::Picture { alt, png } => {
                    let _ = writeln!(
                        html,
                        "<figure><img alt=\"{}\" src=\"data:image/png;base64,{}\"></figure>",
                        escape(alt),
                        base64(png)
                    );
                }
            }
        }
        html + "</body>\n</html>\n"
    }

    /// Writes the page to `path`, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path.as_ref(), self.to_html().as_bytes())
    }
}

/// The page's look, inline (no external style sheet or font).
const STYLE: &str = "<style>
body { font-family: sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .3em; }
h2 { margin-top: 1.6em; color: #1f4e79; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 13px; line-height: 1.2;
  font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: .35em .8em; text-align: left; }
th { background: #f0f4f8; font-weight: normal; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
</style>
";

/// `text` with HTML's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn text_is_escaped() {
        let mut report = Report::new("a <b> & \"c\"");
        report.preformatted("<script>");
        let html = report.to_html();
        assert!(html.contains("<h1>a &lt;b&gt; &amp; &quot;c&quot;</h1>"));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
    }
}
