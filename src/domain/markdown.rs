//! What editors may write in Markdown and what it becomes: HTML that is sanitised, bounded in
//! nesting and size (so one hostile text cannot stall a renderer), and loads nothing from
//! elsewhere (feed readers and API consumers show it without our Content-Security-Policy).
//!
//! - Raw HTML in the source is shown as text, never interpreted: the structure of the output
//!   comes from Markdown alone, so its depth is the depth we count here.
//! - An image is shown only from this site (a path starting with one `/`); any other image
//!   becomes a link to it, labelled with its description, so nothing is loaded on display.
//! - Protocol-relative links (`//host/…`) become `https://host/…`.
//! - Links may use http, https, mailto and tel; anything else (javascript:, data:) is dropped.

use pulldown_cmark::{CowStr, Event, Parser, Tag, TagEnd};

/// Deepest nesting of blocks and inline elements (a paragraph in a list in a quote counts
/// three) we accept. Real announcements use three or four levels; the HTML sanitiser's cost
/// grows with the square of the depth.
pub const MAX_NESTING: usize = 20;

/// Largest HTML one text may render to, in bytes. A text of the longest allowed length renders
/// to well under this unless it repeats a long link by reference thousands of times.
pub const MAX_HTML_BYTES: usize = 256 * 1024;

/// Why a text is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkdownError {
    TooDeeplyNested,
    RendersTooLarge,
}

impl MarkdownError {
    /// The message catalogue's key for this refusal.
    pub fn message_key(self) -> &'static str {
        match self {
            MarkdownError::TooDeeplyNested => "write.markdown_too_deep",
            MarkdownError::RendersTooLarge => "write.markdown_too_large",
        }
    }
}

/// Whether `source` is within the bounds; writes refuse what is not.
pub fn check(source: &str) -> Result<(), MarkdownError> {
    safe_events(source).map(|_| ())
}

/// The text as sanitised HTML. A text beyond the bounds (stored before they existed) is shown
/// as escaped plain paragraphs instead, which takes linear time.
pub fn render(source: &str) -> String {
    let Ok(events) = safe_events(source) else { return plain_paragraphs(source) };
    let mut html = String::with_capacity(source.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    sanitiser().clean(&html).to_string()
}

/// The parser's events with raw HTML turned into text, outside images made links, and
/// protocol-relative links made https; refused when nested too deeply or rendering too large.
fn safe_events(source: &str) -> Result<Vec<Event<'_>>, MarkdownError> {
    let mut events = Vec::new();
    let (mut depth, mut estimate) = (0usize, 0usize);
    // Inside an outside image we emit a link, so its end must close a link too.
    let mut image_as_link = Vec::new();
    for event in Parser::new(source) {
        let event = match event {
            Event::Start(tag) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(MarkdownError::TooDeeplyNested);
                }
                let tag = match tag {
                    Tag::Link { link_type, dest_url, title, id } => {
                        Tag::Link { link_type, dest_url: absolute_https(dest_url), title, id }
                    }
                    Tag::Image { link_type, dest_url, title, id } => {
                        let local = is_site_path(&dest_url);
                        image_as_link.push(!local);
                        if local {
                            Tag::Image { link_type, dest_url, title, id }
                        } else {
                            Tag::Link { link_type, dest_url: absolute_https(dest_url), title, id }
                        }
                    }
                    // Raw HTML blocks become paragraphs of text (see `Event::Html` below).
                    Tag::HtmlBlock => Tag::Paragraph,
                    other => other,
                };
                estimate += 24 + tag_text_len(&tag);
                Event::Start(tag)
            }
            Event::End(end) => {
                depth = depth.saturating_sub(1);
                estimate += 16;
                match end {
                    TagEnd::Image if image_as_link.pop() == Some(true) => Event::End(TagEnd::Link),
                    TagEnd::HtmlBlock => Event::End(TagEnd::Paragraph),
                    other => Event::End(other),
                }
            }
            Event::Html(raw) | Event::InlineHtml(raw) => {
                estimate += raw.len() * 2;
                Event::Text(raw)
            }
            other => {
                estimate += 8 + other_text_len(&other) * 2;
                other
            }
        };
        if estimate > MAX_HTML_BYTES {
            return Err(MarkdownError::RendersTooLarge);
        }
        events.push(event);
    }
    Ok(events)
}

fn tag_text_len(tag: &Tag) -> usize {
    match tag {
        Tag::Link { dest_url, title, .. } | Tag::Image { dest_url, title, .. } => 2 * (dest_url.len() + title.len()),
        Tag::CodeBlock(pulldown_cmark::CodeBlockKind::Fenced(info)) => info.len(),
        _ => 0,
    }
}

fn other_text_len(event: &Event) -> usize {
    match event {
        Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => t.len(),
        Event::FootnoteReference(t) => t.len(),
        _ => 0,
    }
}

/// A path on this site: one leading slash, not two (`//host` is another site).
fn is_site_path(url: &str) -> bool {
    url.starts_with('/') && !url.starts_with("//") && !url.starts_with("/\\")
}

fn absolute_https(url: CowStr<'_>) -> CowStr<'_> {
    if url.starts_with("//") { CowStr::from(format!("https:{url}")) } else { url }
}

fn sanitiser() -> &'static ammonia::Builder<'static> {
    static BUILDER: std::sync::OnceLock<ammonia::Builder<'static>> = std::sync::OnceLock::new();
    BUILDER.get_or_init(|| {
        let mut b = ammonia::Builder::default();
        b.link_rel(Some("noopener noreferrer nofollow"))
            .url_schemes(["http", "https", "mailto", "tel"].into_iter().collect())
            // Second line of defence: an image that is not from this site loses its address.
            .attribute_filter(|element, attribute, value| {
                if element == "img" && attribute == "src" && !is_site_path(value) { None } else { Some(value.into()) }
            });
        b
    })
}

/// The text escaped, one paragraph per blank-line-separated block.
fn plain_paragraphs(source: &str) -> String {
    let events = source
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| [Event::Start(Tag::Paragraph), Event::Text(p.trim().into()), Event::End(TagEnd::Paragraph)]);
    let mut html = String::with_capacity(source.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_handlers_and_javascript_links_are_removed() {
        let html = render("**fett** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)>");
        assert!(html.contains("<strong>fett</strong>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        // Raw HTML is shown as text, so the attacker's markup is visible, not executed.
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn images_load_only_from_this_site() {
        let html =
            render("![Plan](/static/plan.png) ![Tracker](https://evil.example/p.gif) ![x](//evil.example/q.gif)");
        assert!(html.contains(r#"<img src="/static/plan.png" alt="Plan">"#), "{html}");
        assert!(!html.contains("<img src=\"https"), "{html}");
        assert!(!html.contains("<img src=\"//"), "{html}");
        // The outside image is still reachable, as a link the reader chooses to follow.
        assert!(
            html.contains(r#"<a href="https://evil.example/p.gif" rel="noopener noreferrer nofollow">Tracker</a>"#)
        );
        assert!(html.contains(r#"<a href="https://evil.example/q.gif" rel="noopener noreferrer nofollow">x</a>"#));
    }

    #[test]
    fn raw_html_images_and_protocol_relative_links_load_nothing() {
        let html = render(
            r#"<img src="https://evil.example/p.gif"> [Amt](//amt.example/termine) <a href="//evil.example">x</a>"#,
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains(r#"href="https://amt.example/termine""#), "{html}");
        assert!(!html.contains(r#"<a href="//"#), "{html}");
        assert!(html.contains("&lt;a href="), "raw HTML is shown as text: {html}");
    }

    #[test]
    fn deep_nesting_is_refused_and_rendered_as_text() {
        let hostile = ">".repeat(20_000);
        assert_eq!(check(&hostile), Err(MarkdownError::TooDeeplyNested));
        let html = render(&hostile);
        assert!(!html.contains("<blockquote"), "shown as escaped text: {}", &html[..60]);
        assert!(html.starts_with("<p>&gt;&gt;&gt;"), "{}", &html[..60]);
        assert_eq!(check(&"> ".repeat(MAX_NESTING)), Ok(()));
        assert_eq!(check(&"> ".repeat(MAX_NESTING + 1)), Err(MarkdownError::TooDeeplyNested));
    }

    #[test]
    fn texts_that_render_too_large_are_refused() {
        let url = format!("https://example.org/{}", "a".repeat(1_000));
        let hostile = format!("[x]: {url}\n\n{}", "[x] ".repeat(2_000));
        assert!(hostile.len() < 20_000);
        assert_eq!(check(&hostile), Err(MarkdownError::RendersTooLarge));
        assert!(render(&hostile).len() < 20_000);
    }

    #[test]
    fn ordinary_texts_pass() {
        let text = "# Bürgerbüro\n\n- Ausweise: **nur** mit Termin\n- Meldebescheinigung: [online](https://amt.example/)\n\n> Bitte Geduld.";
        assert_eq!(check(text), Ok(()));
        let html = render(text);
        assert!(html.contains("<li>Ausweise: <strong>nur</strong> mit Termin</li>"), "{html}");
        assert!(html.contains("<blockquote>"), "{html}");
    }
}
