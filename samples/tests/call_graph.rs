//! The bookinfo call graph end to end on loopback: productpage → details, productpage →
//! reviews v1/v2/v3 → ratings, what each version shows, header propagation and what happens
//! when a hop is down.

mod common;

use common::{closed_port_url, get, get_with, start, Bookinfo, Sidecar};
use serde_json::json;

/// How many filled stars of which color the page shows, in page order.
fn stars(page: &str) -> Vec<(usize, String)> {
    page.split("<span class=\"stars\" ")
        .skip(1)
        .map(|s| {
            let filled =
                s.split("data-stars=\"").nth(1).and_then(|v| v.split('"').next()).and_then(|v| v.parse().ok()).expect("data-stars");
            let color = s.split("color:").nth(1).and_then(|v| v.split('"').next()).expect("color").to_string();
            (filled, color)
        })
        .collect()
}

#[tokio::test]
async fn v1_shows_reviews_without_stars_and_never_calls_ratings() {
    let app = Bookinfo::start("v1").await;
    let page = get(&format!("{}/productpage", app.productpage.url())).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.sample(), "productpage");
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.body.contains("<title>Simple Bookstore App</title>"));
    assert!(page.body.contains("The Comedy of Errors"));
    assert!(page.body.contains("PublisherA") && page.body.contains("123-1234567890"), "details shown: {}", page.body);
    assert!(page.body.contains("The slapstick humour is refreshing!"), "reviews shown: {}", page.body);
    assert!(page.body.contains("Reviews served by: <u>test-pod</u>"));
    assert!(stars(&page.body).is_empty(), "v1 has no stars: {}", page.body);

    let reviews = get(&format!("{}/reviews/0", app.reviews.url())).await;
    assert_eq!(reviews.sample(), "reviews-v1");
    let body = reviews.json();
    assert!(body.get("ratings_peer").is_none(), "v1 never asks ratings: {body}");
    assert!(body["reviews"].as_array().unwrap().iter().all(|r| r.get("rating").is_none()));
    assert!(app.ratings_hop.requests().is_empty(), "v1 called ratings");
}

#[tokio::test]
async fn v2_shows_black_stars_and_v3_red_stars() {
    for (version, color) in [("v2", "black"), ("v3", "red")] {
        let app = Bookinfo::start(version).await;
        let page = get(&format!("{}/productpage", app.productpage.url())).await;
        assert_eq!(page.status, 200);
        assert_eq!(stars(&page.body), [(5, color.to_string()), (4, color.to_string())], "{version}: {}", page.body);

        let reviews = get(&format!("{}/reviews/0", app.reviews.url())).await;
        assert_eq!(reviews.sample(), format!("reviews-{version}"));
        let body = reviews.json();
        assert_eq!(body["id"], "0");
        assert_eq!(body["podname"], "test-pod");
        assert_eq!(body["clustername"], "null");
        assert_eq!(body["reviews"][0]["reviewer"], "Reviewer1");
        assert_eq!(body["reviews"][0]["rating"], json!({ "stars": 5, "color": color }));
        assert_eq!(body["reviews"][1]["reviewer"], "Reviewer2");
        assert_eq!(body["reviews"][1]["rating"], json!({ "stars": 4, "color": color }));
        assert_eq!(body["ratings_peer"], serde_json::Value::Null, "no sidecar identity on this hop");
        let seen = app.ratings_hop.wait_for(2).await;
        assert!(seen.iter().all(|(path, _)| path == "/ratings/0"), "{seen:?}");
    }
}

#[tokio::test]
async fn products_api_nests_the_details_and_reviews_bodies() {
    let app = Bookinfo::start("v2").await;
    let list = get(&format!("{}/api/v1/products", app.productpage.url())).await;
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["id"], 0);
    assert_eq!(list[0]["title"], "The Comedy of Errors");

    let product = get(&format!("{}/api/v1/products/7", app.productpage.url())).await;
    assert_eq!(product.status, 200);
    let product = product.json();
    assert_eq!(product["id"], 7);
    assert_eq!(product["peer"], serde_json::Value::Null);
    assert_eq!(product["details"]["id"], 7);
    assert_eq!(product["details"]["ISBN-10"], "1234567890");
    assert_eq!(product["reviews"]["id"], "7");
    assert_eq!(product["reviews"]["reviews"][1]["rating"]["stars"], 4);
}

#[tokio::test]
async fn end_user_and_trace_headers_reach_ratings_through_productpage_and_reviews() {
    let ratings = start(&["ratings"]).await;
    let ratings_hop = Sidecar::start(&ratings.url(), None).await;
    let reviews = start(&["reviews", "--version", "v3", "--ratings-url", &ratings_hop.url()]).await;
    let reviews_hop = Sidecar::start(&reviews.url(), None).await;
    let details = start(&["details"]).await;
    let productpage = start(&["productpage", "--details-url", &details.url(), "--reviews-url", &reviews_hop.url()]).await;

    let propagated = [
        ("end-user", "jason"),
        ("x-request-id", "d2b9d7a4-5c1e-4b1a-9f0e-4a7a0c0ffee0"),
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-parentspanid", "0020000000000001"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
        ("b3", "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-ot-span-context", "abc;def;1"),
        ("user-agent", "curl/8.5.0"),
        ("cookie", "session=jason"),
    ];
    let mut sent = propagated.to_vec();
    sent.push(("x-not-propagated", "secret"));
    let page = get_with(&format!("{}/productpage", productpage.url()), &sent).await;
    assert_eq!(page.status, 200);
    assert_eq!(stars(&page.body).len(), 2, "{}", page.body);

    for (hop, seen) in [("reviews", reviews_hop.wait_for(1).await), ("ratings", ratings_hop.wait_for(1).await)] {
        let (_, headers) = &seen[0];
        for (name, value) in propagated {
            assert_eq!(headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name} at the {hop} hop");
        }
        assert!(headers.get("x-not-propagated").is_none(), "only bookinfo's headers are propagated ({hop})");
    }
}

#[tokio::test]
async fn ratings_down_gives_reviews_an_error_rating_not_an_error() {
    let reviews = start(&["reviews", "--version", "v2", "--ratings-url", &closed_port_url().await]).await;
    let details = start(&["details"]).await;
    let productpage = start(&["productpage", "--details-url", &details.url(), "--reviews-url", &reviews.url()]).await;

    let resp = get(&format!("{}/reviews/0", reviews.url())).await;
    assert_eq!(resp.status, 200);
    let body = resp.json();
    for review in body["reviews"].as_array().unwrap() {
        assert_eq!(review["rating"], json!({ "error": "Ratings service is currently unavailable" }));
    }
    assert_eq!(body["ratings_peer"], serde_json::Value::Null);

    let page = get(&format!("{}/productpage", productpage.url())).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Ratings service is currently unavailable"), "{}", page.body);
    assert!(page.body.contains("The slapstick humour is refreshing!"));
    assert!(stars(&page.body).is_empty());
}

#[tokio::test]
async fn details_down_shows_sorry_and_keeps_the_reviews() {
    let ratings = start(&["ratings"]).await;
    let reviews = start(&["reviews", "--version", "v3", "--ratings-url", &ratings.url()]).await;
    let productpage = start(&["productpage", "--details-url", &closed_port_url().await, "--reviews-url", &reviews.url()]).await;

    let page = get(&format!("{}/productpage", productpage.url())).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sorry, product details are currently unavailable for this book."), "{}", page.body);
    assert!(!page.body.contains("PublisherA"));
    assert_eq!(stars(&page.body).len(), 2, "reviews still shown: {}", page.body);

    let product = get(&format!("{}/api/v1/products/0", productpage.url())).await;
    assert_eq!(product.status, 200);
    let product = product.json();
    assert_eq!(product["details"], json!({ "error": "Sorry, product details are currently unavailable for this book." }));
    assert_eq!(product["reviews"]["id"], "0");
}

#[tokio::test]
async fn reviews_down_shows_sorry_and_keeps_the_details() {
    let details = start(&["details"]).await;
    let productpage = start(&["productpage", "--details-url", &details.url(), "--reviews-url", &closed_port_url().await]).await;
    let page = get(&format!("{}/productpage", productpage.url())).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sorry, product reviews are currently unavailable for this book."), "{}", page.body);
    assert!(page.body.contains("PublisherA"));
}

/// An upstream that accepts and never answers costs `--timeout`, not a hung page.
#[tokio::test]
async fn a_silent_upstream_times_out() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = silent.accept().await {
            let _ = held_tx.send(stream);
        }
    });
    let details = start(&["details"]).await;
    let productpage = start(&["productpage", "--details-url", &details.url(), "--reviews-url", &silent_url, "--timeout", "200ms"]).await;
    let started = std::time::Instant::now();
    let page = get(&format!("{}/productpage", productpage.url())).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sorry, product reviews are currently unavailable for this book."));
    assert!(started.elapsed() < common::DEADLINE / 2, "took {:?}", started.elapsed());
    assert!(held_rx.try_recv().is_ok(), "the upstream was reached");
}

#[tokio::test]
async fn serve_returns_after_shutdown() {
    let details = start(&["details"]).await;
    assert_eq!(get(&format!("{}/health", details.url())).await.status, 200);
    details.stop().await;
}
