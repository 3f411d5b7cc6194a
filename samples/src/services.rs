//! The four services' routes, with bookinfo's data and call graph: productpage calls details
//! and reviews (concurrently); reviews v2 and v3 call ratings; v1 never does.

use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::args::{ReviewsVersion, Service};
use crate::server::{App, Reply};

/// The one book of the store.
pub(crate) const PRODUCT_ID: u32 = 0;
pub(crate) const PRODUCT_TITLE: &str = "The Comedy of Errors";
pub(crate) const PRODUCT_DESCRIPTION_HTML: &str = "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: \
     one of <b>William Shakespeare's</b> early plays and his shortest comedy: two pairs of identical twins, \
     separated at birth, and one day of mistaken identities in Ephesus.";

pub(crate) const DETAILS_UNAVAILABLE: &str = "Sorry, product details are currently unavailable for this book.";
pub(crate) const REVIEWS_UNAVAILABLE: &str = "Sorry, product reviews are currently unavailable for this book.";
const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

const REVIEWS: [(&str, &str); 2] = [
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    ("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."),
];

/// Answers `path` for `app`'s service.
pub(crate) async fn route(app: &App, path: &str, headers: &HeaderMap) -> Reply {
    if path == "/health" {
        return Reply::ok(json!({ "status": "ok" }));
    }
    match app.service {
        Service::Details => match product_id(path, "/details/") {
            Id::Number(id) => Reply::ok(details(id)),
            Id::NotNumeric => bad_id(),
            Id::OtherPath => not_found(path),
        },
        Service::Ratings => match product_id(path, "/ratings/") {
            Id::Number(id) => Reply::ok(ratings(id)),
            Id::NotNumeric => bad_id(),
            Id::OtherPath => not_found(path),
        },
        Service::Reviews => match product_id(path, "/reviews/") {
            Id::Number(id) => Reply::ok(reviews(app, id, headers).await),
            Id::NotNumeric => bad_id(),
            Id::OtherPath => not_found(path),
        },
        Service::Productpage => productpage(app, path, headers).await,
    }
}

/// The product id in a `<prefix><id>` path.
enum Id {
    Number(u32),
    NotNumeric,
    OtherPath,
}

fn product_id(path: &str, prefix: &str) -> Id {
    match path.strip_prefix(prefix) {
        Some(rest) if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) => rest.parse().map_or(Id::NotNumeric, Id::Number),
        Some(rest) if !rest.contains('/') => Id::NotNumeric,
        _ => Id::OtherPath,
    }
}

fn bad_id() -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "please provide numeric product id")
}

fn not_found(path: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, &format!("no route for {path}"))
}

fn details(id: u32) -> Value {
    json!({
        "id": id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    })
}

fn ratings(id: u32) -> Value {
    json!({ "id": id, "ratings": { "Reviewer1": 5, "Reviewer2": 4 } })
}

/// v1: text only. v2/v3: each review gets the stars ratings gave (black or red), or an error
/// rating when ratings could not be reached; `ratings_peer` is the identity ratings saw.
async fn reviews(app: &App, id: u32, headers: &HeaderMap) -> Value {
    let color = match app.version {
        ReviewsVersion::V1 => None,
        ReviewsVersion::V2 => Some("black"),
        ReviewsVersion::V3 => Some("red"),
    };
    let ratings = match color {
        Some(_) => Some(app.upstream.get_json(app.ratings_url.join(&format!("/ratings/{id}")), headers).await.ok()),
        None => None,
    };
    let reviews: Vec<Value> = REVIEWS
        .iter()
        .map(|&(reviewer, text)| {
            let mut review = serde_json::Map::new();
            review.insert("reviewer".into(), reviewer.into());
            review.insert("text".into(), text.into());
            if let (Some(color), Some(ratings)) = (color, &ratings) {
                let stars = ratings.as_ref().and_then(|r| r.get("ratings")?.get(reviewer)?.as_u64());
                let rating = match stars {
                    Some(stars) => json!({ "stars": stars, "color": color }),
                    None => json!({ "error": RATINGS_UNAVAILABLE }),
                };
                review.insert("rating".into(), rating);
            }
            Value::Object(review)
        })
        .collect();
    let mut body = json!({
        "id": id.to_string(),
        "podname": app.pod_name,
        "clustername": "null",
        "reviews": reviews,
    });
    if let (Some(ratings), Some(fields)) = (&ratings, body.as_object_mut()) {
        let peer = ratings.as_ref().and_then(|r| r.get("peer")).cloned().unwrap_or(Value::Null);
        fields.insert("ratings_peer".into(), peer);
    }
    body
}

async fn productpage(app: &App, path: &str, headers: &HeaderMap) -> Reply {
    match path {
        "/" => Reply::Html(crate::html::index()),
        "/productpage" => {
            let (details, reviews) = product(app, PRODUCT_ID, headers).await;
            Reply::Html(crate::html::product_page(details.as_ref(), reviews.as_ref()))
        }
        "/api/v1/products" => Reply::ok(json!([{ "id": PRODUCT_ID, "title": PRODUCT_TITLE, "descriptionHtml": PRODUCT_DESCRIPTION_HTML }])),
        _ => match product_id(path, "/api/v1/products/") {
            Id::Number(id) => {
                let (details, reviews) = product(app, id, headers).await;
                Reply::ok(json!({
                    "id": id,
                    "details": details.unwrap_or_else(|| json!({ "error": DETAILS_UNAVAILABLE })),
                    "reviews": reviews.unwrap_or_else(|| json!({ "error": REVIEWS_UNAVAILABLE })),
                }))
            }
            Id::NotNumeric => bad_id(),
            Id::OtherPath => not_found(path),
        },
    }
}

/// Details and reviews of one product, fetched concurrently; `None` for a failed call.
async fn product(app: &App, id: u32, headers: &HeaderMap) -> (Option<Value>, Option<Value>) {
    let details = app.upstream.get_json(app.details_url.join(&format!("/details/{id}")), headers);
    let reviews = app.upstream.get_json(app.reviews_url.join(&format!("/reviews/{id}")), headers);
    let (details, reviews) = tokio::join!(details, reviews);
    (details.ok(), reviews.ok())
}
