//! `gateway migrate [--check]` as a deployment pipeline runs it, against a real PostgreSQL: on a
//! database whose role may create extensions, and on one whose role may not (as on Azure
//! Database for PostgreSQL before `azure.extensions` lists VECTOR): there the shared state's
//! schema still applies and the gateway runs; only the pgvector features are reported off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_tests::process::Process;
use sqlx::Connection;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn migrate(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("migrate")
        .args(args)
        .env("DATABASE_URL", url)
        .env("API_GATEWAY_LOG_LEVEL", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn admin_url() -> String {
    std::env::var("AIGW_TEST_DATABASE_URL")
        .expect("AIGW_TEST_DATABASE_URL is not set: run the suite with scripts/test")
}

#[tokio::test]
async fn check_reports_pending_migrations_until_they_are_applied() {
    let url = aigw_tests::database_on(&admin_url()).await;
    let before = migrate(&url, &["--check"]);
    assert_eq!(before.status.code(), Some(1), "{}", text(&before));
    let listed = text(&before);
    assert!(listed.contains("pending shared state 1"), "{listed}");
    assert!(listed.contains("pending pgvector features 1"), "{listed}");

    let applied = migrate(&url, &[]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    assert!(text(&applied).contains("pgvector features included"));

    let after = migrate(&url, &["--check"]);
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    assert_eq!(migrate(&url, &["--bogus"]).status.code(), Some(2));
}

#[tokio::test]
async fn without_the_extension_only_the_vector_features_are_off() {
    // A role that may not create the (untrusted) vector extension, owning its database.
    let admin = admin_url();
    let suffix = format!("{:x}", std::process::id()) + &format!("{:x}", rand_suffix());
    let role = format!("noext_{suffix}");
    let db = format!("noext_{suffix}");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    // Names are made here from hex digits only; DDL cannot bind identifiers.
    for ddl in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'noext' NOSUPERUSER"),
        format!("CREATE DATABASE {db} OWNER {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let base = admin.split_once("://").unwrap().1;
    let host = base.split_once('@').unwrap().1.rsplit_once('/').unwrap().0;
    let url = format!("postgres://{role}:noext@{host}/{db}");

    let out = migrate(&url, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("shared state schema up to date"), "{said}");
    assert!(
        said.contains("azure.extensions"),
        "names the server parameter: {said}"
    );
    let check = migrate(&url, &["--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(text(&check).contains("pending pgvector features"));
    assert!(!text(&check).contains("pending shared state"));

    // The gateway runs on that database with its shared state up.
    let config = aigw_tests::app_config("chat", &[("only", "http://127.0.0.1:9", None)]);
    let gw = Process::start(BIN, &config, &[("DATABASE_URL", url.as_str())]).await;
    let health: serde_json::Value = reqwest::get(gw.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["store"]["kind"], "postgres");
    assert_eq!(health["store"]["state"], "up", "{health}");
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
