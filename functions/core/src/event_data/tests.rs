use std::sync::Arc;

use chrono::{TimeZone, Utc};

use super::*;
use crate::memory::{MemoryBodies, MemoryMacKey};
use crate::ports::EventBodies;

const BASE: &str = "https://api.example";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("time")
}

/// Two stores' bodies, each stored under its own SHA-256, and the minting side.
async fn world() -> (EventData, String, String) {
    let bodies = Arc::new(MemoryBodies::new());
    let a = crate::job::sha256_hex(b"{\"store\":\"a\"}");
    let b = crate::job::sha256_hex(b"{\"store\":\"b\"}");
    bodies
        .put(
            &crate::job::body_key("store-a", &a),
            "{\"store\":\"a\"}".into(),
        )
        .await
        .expect("put");
    bodies
        .put(
            &crate::job::body_key("store-b", &b),
            "{\"store\":\"b\"}".into(),
        )
        .await
        .expect("put");
    let data =
        EventData::new(Arc::new(MemoryMacKey::random().expect("key")), bodies).minting_at(BASE);
    (data, a, b)
}

fn token(url: &str) -> &str {
    url.strip_prefix(&format!("{BASE}{PATH}"))
        .expect("a dataref under the API's base")
}

#[tokio::test]
async fn a_dataref_opens_its_stores_body_for_seven_days_and_is_gone_after() {
    let (data, a, _) = world().await;
    let url = data.link("store-a", &a, now()).await.expect("link");
    let body = Opened::Body(BodyAt::Bytes("{\"store\":\"a\"}".into()));
    assert_eq!(data.open_at(token(&url), now()).await.expect("open"), body);
    assert_eq!(
        data.open_at(token(&url), now() + chrono::Duration::days(7))
            .await
            .expect("open"),
        body
    );
    assert_eq!(
        data.open_at(
            token(&url),
            now() + chrono::Duration::days(7) + chrono::Duration::seconds(1)
        )
        .await
        .expect("open"),
        Opened::Expired
    );
}

#[tokio::test]
async fn a_token_for_store_a_never_opens_store_bs_body_even_with_its_sha256_spliced_in() {
    // GIVEN a token for store A's body, and the SHA-256 of store B's
    let (data, a, b) = world().await;
    let url = data.link("store-a", &a, now()).await.expect("link");
    let (signed, mac) = token(&url).split_once('.').expect("two parts");
    let mut bytes = URL_SAFE_NO_PAD.decode(signed).expect("base64");
    // WHEN the store, or the SHA-256, is replaced by store B's
    let mut other_store = bytes[..FIXED_LEN].to_vec();
    other_store.extend_from_slice(b"store-b");
    bytes[9..FIXED_LEN].copy_from_slice(&unhex(&b).expect("hex"));
    for forged in [other_store, bytes] {
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(forged));
        // THEN nothing opens
        assert_eq!(
            data.open_at(&forged, now()).await.expect("open"),
            Opened::NotFound
        );
    }
    // AND a token minted for store B's body under store A's name opens nothing either
    let url = data.link("store-a", &b, now()).await.expect("link");
    assert_eq!(
        data.open_at(token(&url), now()).await.expect("open"),
        Opened::Gone
    );
}

#[tokio::test]
async fn a_token_changed_in_any_one_character_opens_nothing() {
    let (data, a, _) = world().await;
    let url = data.link("store-a", &a, now()).await.expect("link");
    let token = token(&url).to_owned();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    for i in 0..token.len() {
        for &c in alphabet {
            let mut changed = token.clone().into_bytes();
            if changed[i] == c {
                continue;
            }
            changed[i] = c;
            let changed = String::from_utf8(changed).expect("ascii");
            assert_eq!(
                data.open_at(&changed, now()).await.expect("open"),
                Opened::NotFound,
                "{changed}"
            );
        }
    }
}

#[tokio::test]
async fn a_token_made_with_another_key_opens_nothing() {
    let (data, a, _) = world().await;
    let (other, _, _) = world().await;
    let url = other.link("store-a", &a, now()).await.expect("link");
    assert_eq!(
        data.open_at(token(&url), now()).await.expect("open"),
        Opened::NotFound
    );
}

#[tokio::test]
async fn garbage_tokens_open_nothing_and_never_fail() {
    let (data, a, _) = world().await;
    let url = data.link("store-a", &a, now()).await.expect("link");
    let good = token(&url);
    let (signed, mac) = good.split_once('.').expect("parts");
    let mut tokens = vec![
        String::new(),
        ".".into(),
        "..".into(),
        signed.to_owned(),
        format!("{signed}."),
        format!(".{mac}"),
        format!("{signed}.{mac}."),
        format!("{signed}={mac}"),
        format!("{signed}.{mac}="),
        format!("{signed}.{}", &mac[..mac.len() - 1]),
        format!("{signed}A.{mac}"),
        format!("{good}{good}"),
        "A".repeat(MAX_TOKEN + 1),
        format!("{}.{mac}", URL_SAFE_NO_PAD.encode([VERSION])),
        format!("{}.{mac}", URL_SAFE_NO_PAD.encode([0u8; FIXED_LEN + 1])),
        format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode(vec![VERSION; FIXED_LEN + 200])
        ),
        "%2e%2e%2f".into(),
        "é.ü".into(),
        "\0".into(),
    ];
    let mut rng = fastrand::Rng::with_seed(23);
    for _ in 0..2_000 {
        let len = rng.usize(0..120);
        tokens.push((0..len).map(|_| rng.char(..)).collect());
        let len = rng.usize(0..120);
        tokens.push(
            (0..len)
                .map(|_| *rng.choice(b"Aa0-_.=+/").expect("alphabet") as char)
                .collect(),
        );
    }
    for t in tokens {
        assert_eq!(
            data.open_at(&t, now()).await.expect("open"),
            Opened::NotFound,
            "{t:?}"
        );
    }
}

#[tokio::test]
async fn minting_without_the_apis_address_is_a_configuration_error() {
    let data = EventData::new(
        Arc::new(MemoryMacKey::random().expect("key")),
        Arc::new(MemoryBodies::new()),
    );
    let err = data
        .link("store-a", &"a".repeat(64), now())
        .await
        .expect_err("no base");
    assert_eq!(
        err.to_string(),
        "configuration: HERALD_PUBLIC_URL must be set: dataref URLs start with it"
    );
}
