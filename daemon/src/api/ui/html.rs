//! A small HTML builder that escapes by construction: markup is only ever a `&'static str`
//! written in this crate ([`Html::raw`]); everything else — names, reasons, messages, values read
//! from manifests and directories — goes through [`Html::text`] or [`Html::attr`], which escape
//! it. A value from outside cannot become markup without a `'static` string, which it cannot be.

use std::fmt::Write as _;

/// An HTML document or fragment being written.
#[derive(Debug, Default)]
pub struct Html(String);

impl Html {
    pub fn new() -> Html {
        Html(String::with_capacity(8 * 1024))
    }

    /// Markup written in the source: tags, fixed text.
    pub fn raw(&mut self, markup: &'static str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// Text content, escaped.
    pub fn text(&mut self, text: &str) -> &mut Html {
        escape_into(&mut self.0, text);
        self
    }

    /// A value shown as text (numbers, times, ids), escaped.
    pub fn show(&mut self, value: impl std::fmt::Display) -> &mut Html {
        let mut text = String::new();
        let _ = write!(text, "{value}");
        self.text(&text)
    }

    /// ` name="value"`, the value escaped (`name` is markup: a `'static` string).
    pub fn attr(&mut self, name: &'static str, value: &str) -> &mut Html {
        self.0.push(' ');
        self.0.push_str(name);
        self.0.push_str("=\"");
        escape_into(&mut self.0, value);
        self.0.push('"');
        self
    }

    /// `<tag>text</tag>` (a `'static` tag name; text escaped).
    pub fn element(&mut self, tag: &'static str, text: &str) -> &mut Html {
        self.0.push('<');
        self.0.push_str(tag);
        self.0.push('>');
        self.text(text);
        self.0.push_str("</");
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    /// A table cell holding `text`.
    pub fn td(&mut self, text: &str) -> &mut Html {
        self.element("td", text)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Escapes `&`, `<`, `>`, `"` and `'`: safe in text and in double- or single-quoted attributes.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let mut html = Html::new();
        html.raw("<p").attr("title", "a\"b' <c>").raw(">").text("<script>alert(1)</script> & co").raw("</p>");
        assert_eq!(
            html.into_string(),
            "<p title=\"a&quot;b&#39; &lt;c&gt;\">&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</p>"
        );
    }

    #[test]
    fn elements_escape_their_text() {
        let mut html = Html::new();
        html.element("td", "</td><td>x").show(42);
        assert_eq!(html.into_string(), "<td>&lt;/td&gt;&lt;td&gt;x</td>42");
    }
}
