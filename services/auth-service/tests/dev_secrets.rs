//! The auth-service binary refuses its built-in development secrets unless `MEDIABUS__ENV=dev`
//! (issue 12 item 1, DESIGN §12): checked before it connects anywhere, with the key named.

use std::process::Output;

/// The binary on its built-in defaults plus `env`, with no config file and no NATS to reach.
fn run(env: &[(&str, &str)]) -> Output {
    mediabus_testkit::run_unconfigured(env!("CARGO_BIN_EXE_auth-service"), env)
}

#[test]
fn a_production_start_with_a_development_secret_is_refused_and_names_the_key() {
    let out = run(&[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("MEDIABUS__AUTH__SIGNING_KEY__SECRET") && log.contains("MEDIABUS__ENV=dev"), "{log}");
    assert!(!log.contains("dev-only-secret-change-me"), "the secret itself is never printed: {log}");

    // A dev NATS password is refused too, once the signing key is a real one.
    let out = run(&[
        ("MEDIABUS__ENV", "production"),
        ("MEDIABUS__AUTH__SIGNING_KEY__SECRET", "a-production-secret-0123456789abcdef0123"),
        ("MEDIABUS__NATS__PASSWORD", "auth-dev-only"),
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("MEDIABUS__NATS__PASSWORD") && !log.contains("auth-dev-only"), "{log}");
}

#[test]
fn development_mode_accepts_them() {
    let out = run(&[("MEDIABUS__ENV", "dev")]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("development secret"), "{log}");
    assert!(!out.status.success(), "it went on to connect to NATS, which is not there: {log}");
}
