//! productpage's HTML. Everything that came from an upstream is escaped.

use std::fmt::Write;

use serde_json::Value;

use crate::services::{DETAILS_UNAVAILABLE, PRODUCT_DESCRIPTION_HTML, PRODUCT_TITLE, REVIEWS_UNAVAILABLE};

const TITLE: &str = "Simple Bookstore App";

/// `GET /`: a pointer to the product page.
pub(crate) fn index() -> String {
    let mut page = head();
    page.push_str(
        "<h1>Simple Bookstore App</h1>\n<p>Open the <a href=\"/productpage\">product page</a> \
         or the <a href=\"/api/v1/products\">products API</a>.</p>\n",
    );
    page.push_str("</body>\n</html>\n");
    page
}

/// `GET /productpage`: the book, its details and its reviews, or bookinfo's "Sorry" text for
/// the part whose call failed.
pub(crate) fn product_page(details: Option<&Value>, reviews: Option<&Value>) -> String {
    let mut page = head();
    let _ = write!(page, "<h1 class=\"title\">{}</h1>\n<p class=\"summary\">{PRODUCT_DESCRIPTION_HTML}</p>\n", escape(PRODUCT_TITLE));
    page.push_str("<section class=\"details\">\n<h2>Book Details</h2>\n");
    match details {
        Some(d) => {
            page.push_str("<dl>\n");
            const FIELDS: [(&str, &str); 8] = [
                ("Author", "author"),
                ("Year", "year"),
                ("Type", "type"),
                ("Pages", "pages"),
                ("Publisher", "publisher"),
                ("Language", "language"),
                ("ISBN-10", "ISBN-10"),
                ("ISBN-13", "ISBN-13"),
            ];
            for (label, key) in FIELDS {
                let _ = writeln!(page, "<dt>{label}:</dt><dd>{}</dd>", escape(&text(d.get(key))));
            }
            page.push_str("</dl>\n");
        }
        None => {
            let _ = writeln!(page, "<p class=\"error\">{DETAILS_UNAVAILABLE}</p>");
        }
    }
    page.push_str("</section>\n<section class=\"reviews\">\n<h2>Book Reviews</h2>\n");
    match reviews.and_then(|r| Some((r, r.get("reviews")?.as_array()?))) {
        Some((body, list)) => {
            for review in list {
                review_html(&mut page, review);
            }
            let _ = writeln!(
                page,
                "<p class=\"served-by\"><small>Reviews served by: <u>{}</u></small></p>",
                escape(&text(body.get("podname")))
            );
        }
        None => {
            let _ = writeln!(page, "<p class=\"error\">{REVIEWS_UNAVAILABLE}</p>");
        }
    }
    page.push_str("</section>\n</body>\n</html>\n");
    page
}

fn head() -> String {
    format!("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{TITLE}</title>\n</head>\n<body>\n")
}

/// One review: text, reviewer, and its stars (filled in the rating's color, then empty up to
/// five) or the rating's error.
fn review_html(page: &mut String, review: &Value) {
    page.push_str("<blockquote class=\"review\">\n");
    let _ = writeln!(page, "<p>{}</p>", escape(&text(review.get("text"))));
    let _ = writeln!(page, "<small class=\"reviewer\">{}</small>", escape(&text(review.get("reviewer"))));
    if let Some(rating) = review.get("rating") {
        match rating.get("stars").and_then(Value::as_u64) {
            Some(stars) => {
                let filled = usize::try_from(stars.min(5)).unwrap_or(5);
                let color = escape(&text(rating.get("color")));
                let _ = writeln!(
                    page,
                    "<span class=\"stars\" data-stars=\"{filled}\" style=\"color:{color}\">{}{}</span>",
                    "★".repeat(filled),
                    "☆".repeat(5 - filled)
                );
            }
            None => {
                let _ = writeln!(page, "<p class=\"rating-error\">{}</p>", escape(&text(rating.get("error"))));
            }
        }
    }
    page.push_str("</blockquote>\n");
}

/// A JSON scalar as text (strings without their quotes); anything else is empty.
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        _ => String::new(),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_upstream_text() {
        let reviews = json!({ "podname": "<pod>", "reviews": [{ "reviewer": "R\"1", "text": "<script>x</script>", "rating": { "stars": 9, "color": "red\" onload=\"x" } }] });
        let page = product_page(None, Some(&reviews));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("&lt;pod&gt;"));
        assert!(page.contains("data-stars=\"5\""), "stars are capped at five");
        assert!(!page.contains("onload=\"x"), "{page}");
        assert!(page.contains(DETAILS_UNAVAILABLE));
    }
}
