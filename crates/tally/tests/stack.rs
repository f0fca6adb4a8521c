//! Against the real local stack started by `make up` (run through `make test`, which exports its endpoints).

use std::process::{Command, Output};

fn tally(args: &[&str]) -> Output {
    for var in ["TALLY__KAFKA__BROKERS", "TALLY__POSTGRES__URL", "TALLY__REDIS__URL"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the tests with `make test` (it starts the stack)"
        );
    }
    Command::new(env!("CARGO_BIN_EXE_tally")).args(args).output().unwrap()
}

#[test]
fn topics_are_created_explicitly_and_idempotently_and_the_stack_is_healthy() {
    let first = tally(&["topics", "ensure"]);
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let second = tally(&["topics", "ensure"]);
    let text = String::from_utf8_lossy(&second.stdout);
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(text.lines().all(|l| l.contains(" exists ")), "a second ensure must find every topic: {text}");

    let health = tally(&["stack", "health"]);
    let text = String::from_utf8_lossy(&health.stdout);
    assert_eq!(health.status.code(), Some(0), "{text}");
    for service in ["kafka", "postgres", "redis"] {
        assert!(text.lines().any(|l| l.starts_with(service) && l.contains(" ok ")), "{service}: {text}");
    }
    assert!(text.contains("7/7 Tally topics"), "{text}");
}

#[test]
fn health_reports_each_dependency_separately_and_fails_when_one_is_down() {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["stack", "health"])
        .env("TALLY__REDIS__URL", "redis://127.0.0.1:1/")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.lines().any(|l| l.starts_with("redis") && l.contains("DOWN")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("postgres") && l.contains(" ok ")), "{text}");
}
