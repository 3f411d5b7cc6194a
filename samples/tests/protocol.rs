//! What every service answers the same way (health, 404, 405, bad ids, `x-weft-sample`), the
//! exact bodies of details and ratings, and the peer identity read from
//! `x-forwarded-client-cert`, also as the nested services saw it.

mod common;

use common::{get, get_with, request, start, Sidecar};
use http::Method;
use serde_json::{json, Value};

const PRODUCTPAGE_SA: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
const REVIEWS_SA: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

/// An element as a sidecar's SANITIZE_SET writes it, for a client with `uri`.
fn xfcc(uri: &str) -> String {
    format!("By=spiffe://cluster.local/ns/default/sa/server;Hash=9ba61d6425303443;Subject=\"O=weft,CN=a\";URI={uri}")
}

#[tokio::test]
async fn every_service_answers_health_404_and_405() {
    for (argv, name) in [
        (&["productpage"][..], "productpage"),
        (&["details"][..], "details"),
        (&["ratings"][..], "ratings"),
        (&["reviews"][..], "reviews-v1"),
        (&["reviews", "--version", "v2"][..], "reviews-v2"),
        (&["reviews", "--version", "v3"][..], "reviews-v3"),
    ] {
        let svc = start(argv).await;
        let health = get(&format!("{}/health", svc.url())).await;
        assert_eq!(health.status, 200, "{name}");
        assert_eq!(health.sample(), name);
        assert_eq!(health.json()["status"], "ok");

        let missing = get(&format!("{}/no/such/path", svc.url())).await;
        assert_eq!(missing.status, 404, "{name}");
        assert_eq!(missing.sample(), name);
        assert_eq!(missing.json()["error"], "no route for /no/such/path");

        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let refused = request(method.clone(), &format!("{}/health", svc.url()), &[]).await;
            assert_eq!(refused.status, 405, "{name} {method}");
            assert_eq!(refused.headers["allow"], "GET, HEAD");
            assert_eq!(refused.sample(), name);
        }
        svc.stop().await;
    }
}

#[tokio::test]
async fn details_and_ratings_bodies() {
    let details = start(&["details"]).await;
    let resp = get(&format!("{}/details/3", details.url())).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "application/json");
    assert_eq!(
        resp.json(),
        json!({
            "id": 3, "author": "William Shakespeare", "year": 1595, "type": "paperback", "pages": 200,
            "publisher": "PublisherA", "language": "English", "ISBN-10": "1234567890", "ISBN-13": "123-1234567890",
            "peer": null,
        })
    );

    let ratings = start(&["ratings"]).await;
    let resp = get(&format!("{}/ratings/3", ratings.url())).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({ "id": 3, "ratings": { "Reviewer1": 5, "Reviewer2": 4 }, "peer": null }));
}

#[tokio::test]
async fn non_numeric_ids_are_400() {
    let details = start(&["details"]).await;
    let ratings = start(&["ratings"]).await;
    let reviews = start(&["reviews"]).await;
    let productpage = start(&["productpage"]).await;
    for url in [
        format!("{}/details/abc", details.url()),
        format!("{}/details/", details.url()),
        format!("{}/ratings/-1", ratings.url()),
        format!("{}/reviews/1.5", reviews.url()),
        format!("{}/api/v1/products/x", productpage.url()),
    ] {
        let resp = get(&url).await;
        assert_eq!(resp.status, 400, "{url}");
        assert_eq!(resp.json()["error"], "please provide numeric product id", "{url}");
    }
}

#[tokio::test]
async fn peer_is_the_uri_of_the_incoming_xfcc() {
    let details = start(&["details"]).await;
    let url = format!("{}/details/0", details.url());
    assert_eq!(get(&url).await.json()["peer"], Value::Null);
    let with = get_with(&url, &[("x-forwarded-client-cert", &xfcc(PRODUCTPAGE_SA))]).await;
    assert_eq!(with.json()["peer"], PRODUCTPAGE_SA);
    // Errors carry it too.
    let missing = get_with(&format!("{}/nope", details.url()), &[("x-forwarded-client-cert", &xfcc(PRODUCTPAGE_SA))]).await;
    assert_eq!(missing.json()["peer"], PRODUCTPAGE_SA);
    // An element without URI is no identity.
    let no_uri = get_with(&url, &[("x-forwarded-client-cert", "By=spiffe://x;Hash=ab")]).await;
    assert_eq!(no_uri.json()["peer"], Value::Null);
}

/// With a "sidecar" in front of each service stamping the caller's identity, productpage's API
/// shows the identity every hop saw: details and reviews saw productpage, ratings saw reviews.
#[tokio::test]
async fn nested_bodies_carry_the_identity_each_hop_saw() {
    let ratings = start(&["ratings"]).await;
    let ratings_sidecar = Sidecar::start(&ratings.url(), Some(&xfcc(REVIEWS_SA))).await;
    let reviews = start(&["reviews", "--version", "v2", "--ratings-url", &ratings_sidecar.url()]).await;
    let reviews_sidecar = Sidecar::start(&reviews.url(), Some(&xfcc(PRODUCTPAGE_SA))).await;
    let details = start(&["details"]).await;
    let details_sidecar = Sidecar::start(&details.url(), Some(&xfcc(PRODUCTPAGE_SA))).await;
    let productpage = start(&["productpage", "--details-url", &details_sidecar.url(), "--reviews-url", &reviews_sidecar.url()]).await;

    let ingress = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let product =
        get_with(&format!("{}/api/v1/products/0", productpage.url()), &[("x-forwarded-client-cert", &xfcc(ingress))]).await.json();
    assert_eq!(product["peer"], ingress);
    assert_eq!(product["details"]["peer"], PRODUCTPAGE_SA);
    assert_eq!(product["reviews"]["peer"], PRODUCTPAGE_SA);
    assert_eq!(product["reviews"]["ratings_peer"], REVIEWS_SA);
    // productpage does not pass its own caller's identity on.
    let (_, headers) = &details_sidecar.wait_for(1).await[0];
    assert!(headers.get("x-forwarded-client-cert").is_none());
}
