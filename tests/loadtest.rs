//! The load-test harness for a few seconds against the real server binary: its report is
//! consistent with itself and with what the server counted, and its JSON and charts are
//! written.

mod support;

use clap::Parser;
use matchwell_loadtest::Settings;
use serde_json::Value;
use support::{SECRET, Server};

/// A counter of the server's `/metrics`.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn assert_ordered(what: &str, figures: &Value) {
    let at = |key: &str| {
        figures[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}.{key}"))
    };
    assert!(
        at("p50") <= at("p95") && at("p95") <= at("p99") && at("p99") <= at("max"),
        "{what}: {figures}"
    );
}

#[test]
fn a_short_run_reports_consistent_figures_as_json_and_charts() {
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("report.json");
    let charts = out.path().join("charts");
    let settings = Settings::try_parse_from([
        "loadtest",
        "--url",
        &server.base,
        "--secret",
        SECRET,
        "--rate",
        "150",
        "--duration",
        "3s",
        "--drain",
        "5s",
        "--cancel-share",
        "0.3",
        "--cancel-after-min",
        "20ms",
        "--cancel-after-max",
        "400ms",
        "--pool",
        "5+3 standard rated@3",
        "--pool",
        "3+0 standard rated",
        "--seed",
        "11",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--charts",
        charts.to_str().unwrap(),
    ])
    .unwrap();
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(matchwell_loadtest::run(&settings))
        .unwrap();

    let written: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(written["requests_per_s"].as_f64().unwrap() > 0.0);
    let players = &written["players"];
    let count = |key: &str| {
        players[key]
            .as_u64()
            .unwrap_or_else(|| panic!("players.{key}"))
    };
    assert!(count("arrived") > 300, "{players}");
    assert_eq!(
        count("arrived"),
        count("matched")
            + count("cancelled")
            + count("expired")
            + count("unfinished")
            + count("failed"),
        "every player is counted once: {players}"
    );
    assert!(count("cancelled") > 0, "some players gave up: {players}");
    assert_eq!(
        written["errors"],
        serde_json::json!({}),
        "{}",
        written["errors"]
    );
    assert_eq!(count("failed"), 0);
    // Every matched player saw exactly one match, and every match was seen by both.
    assert_eq!(count("matched"), 2 * written["matches"].as_u64().unwrap());
    assert_eq!(written["matches"], written["matches_seen_by_both"]);
    for route in [
        "POST /v1/matchmaking/queue",
        "GET /v1/matchmaking/queue/{id}/events",
        "DELETE /v1/matchmaking/queue/{id}",
    ] {
        assert_ordered(route, &written["latency_ms"][route]);
    }
    assert_ordered("time_to_match_ms", &written["time_to_match_ms"]);
    assert_ordered(
        "server_time_to_match_ms",
        &written["server_time_to_match_ms"],
    );
    let gap = &written["rating_gap"];
    assert!(
        gap["mean"].as_f64().unwrap() <= gap["max"].as_f64().unwrap(),
        "{gap}"
    );
    assert!(
        gap["p95"].as_u64().unwrap() <= 100,
        "within the first window: {gap}"
    );
    assert_eq!(written["players"]["matched"], report.players.matched);

    // The server counted what the players saw.
    let metrics = reqwest::blocking::get(server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        counter(&metrics, "matchwell_matches_total"),
        report.matches as f64,
        "matches formed"
    );
    assert_eq!(
        counter(&metrics, "matchwell_enqueues_total"),
        report.players.arrived as f64,
        "entries created"
    );

    for chart in ["latency.svg", "time_to_match.svg", "rating_gap.svg"] {
        let svg = std::fs::read_to_string(charts.join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
        assert!(svg.contains("share of"), "{chart} has a labelled axis");
    }
}
