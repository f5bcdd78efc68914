//! The http-bridge binary refuses its built-in development secrets unless `MEDIABUS__ENV=dev`
//! (issue 12 item 1, DESIGN §12): checked before it connects anywhere, with the key named.

use std::process::Output;

/// The binary on its built-in defaults plus `env`, with no config file and no NATS to reach.
fn run(env: &[(&str, &str)]) -> Output {
    mediabus_testkit::run_unconfigured(env!("CARGO_BIN_EXE_http-bridge"), env)
}

#[test]
fn a_production_start_with_a_development_secret_is_refused_and_names_the_key() {
    let out = run(&[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("MEDIABUS__CONTENT__SIGNING_SECRET") && log.contains("MEDIABUS__ENV=dev"), "{log}");
    assert!(!log.contains("dev-only-content-secret-change-me"), "the secret itself is never printed: {log}");

    // The content secret replaced: next comes the `dev` HS256 verification key.
    let out = run(&[("MEDIABUS__CONTENT__SIGNING_SECRET", "a-production-secret-0123456789abcdef0123")]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("auth.keys (kid") && log.contains("is a development secret"), "{log}");

    // A dev NATS password is refused too.
    let out = run(&[("MEDIABUS__ENV", "production"), ("MEDIABUS__NATS__PASSWORD", "bridge-dev-only")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("development secret"));
}

#[test]
fn development_mode_accepts_them() {
    let out = run(&[("MEDIABUS__ENV", "dev")]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("development secret"), "{log}");
    assert!(!out.status.success(), "it went on to connect to NATS, which is not there: {log}");
}
