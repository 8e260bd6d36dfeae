//! The operator commands run as commands: `matchwell pools validate` and `matchwell snapshot
//! inspect`, on good and on bad input, with their exit codes and what they print; and the
//! deploy files against what `matchwell serve` reads.

mod support;

use std::process::Output;

use support::{Server, matchwell, poll};

fn run(args: &[&str]) -> Output {
    matchwell().args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn pools_validate_lists_the_pools_of_a_good_file_and_names_the_fault_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("pools.toml");
    std::fs::write(
        &good,
        "[defaults]\nmax_window = 300\n\n[[pool]]\ntime_control = \"5+3\"\nvariant = \"standard\"\nrated = true\npacing = \"quality\"\ntarget_wait_s = 5\n\n[[pool]]\ntime_control = \"1+0\"\nvariant = \"chess960\"\nrated = false\nregion = \"eu\"\n",
    )
    .unwrap();
    let output = run(&["pools", "validate", good.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed = text(&output.stdout);
    assert!(listed.contains("2 pools"), "{listed}");
    assert!(
        listed.contains("5+3") && listed.contains("chess960"),
        "{listed}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[pool]]\ntime_control = \"5+3\"\nvariant = \"standard\"\nrated = true\nmax_window = -4\n",
    )
    .unwrap();
    let output = run(&["pools", "validate", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let complaint = text(&output.stderr);
    assert!(
        complaint.contains("max_window"),
        "names the field: {complaint}"
    );
    assert!(
        complaint.contains("bad.toml"),
        "names the file: {complaint}"
    );

    let output = run(&["pools", "validate", "/nonexistent/pools.toml"]);
    assert!(!output.status.success());
}

#[test]
fn snapshot_inspect_describes_a_snapshot_the_server_wrote_and_refuses_a_damaged_one() {
    let server = Server::options()
        .env("MATCHWELL_TASK_SNAPSHOTS_MS", "20")
        .start();
    let api = server.api();
    api.enqueue(&support::token("alice"), &support::blitz(1500))
        .ok(201);
    // A copy of the first snapshot written after the enqueue, which holds it (the server
    // keeps only its newest snapshots, so the original may be gone by the time it is read).
    let copies = tempfile::tempdir().unwrap();
    let snapshot = poll("a snapshot holding the entry", || {
        let newest = std::fs::read_dir(&server.data_dir)
            .unwrap()
            .filter_map(|file| {
                let path = file.ok()?.path();
                path.extension()
                    .is_some_and(|ext| ext == "mws")
                    .then_some(path)
            })
            .max()?;
        let copy = copies.path().join(newest.file_name()?);
        std::fs::copy(&newest, &copy).ok()?;
        let output = run(&["snapshot", "inspect", copy.to_str()?]);
        (output.status.success() && text(&output.stdout).contains("searching: 1")).then_some(copy)
    });
    let output = run(&["snapshot", "inspect", snapshot.to_str().unwrap()]);
    let described = text(&output.stdout);
    assert!(described.contains("format version: 1"), "{described}");
    assert!(
        described.contains("replay journal from segment"),
        "{described}"
    );

    let damaged = copies.path().join("damaged.mws");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let output = run(&["snapshot", "inspect", damaged.to_str().unwrap()]);
    assert!(!output.status.success(), "a damaged snapshot is refused");
    assert!(!text(&output.stderr).is_empty());
}

/// Every `MATCHWELL_*` name in `text`.
fn variables_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("MATCHWELL_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_deploy_files_set_only_variables_the_server_reads_and_probe_its_health_routes() {
    let help = run(&["serve", "--help"]);
    assert!(help.status.success(), "{}", text(&help.stderr));
    let known = variables_in(&text(&help.stdout));
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let files = [
        deploy.join("docker-compose.yml"),
        deploy.join("k8s/matchwell.yaml"),
        deploy.join("Dockerfile"),
    ];
    for file in &files {
        let content = std::fs::read_to_string(file).unwrap();
        let used = variables_in(&content);
        assert!(!used.is_empty(), "{} configures nothing", file.display());
        let unknown: Vec<_> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{} sets variables `matchwell serve` does not read: {unknown:?}",
            file.display()
        );
    }
    let compose = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        compose.contains("/health/ready"),
        "compose checks readiness"
    );
    let manifest = std::fs::read_to_string(&files[1]).unwrap();
    for probe in ["path: /health/live", "path: /health/ready"] {
        assert!(manifest.contains(probe), "the StatefulSet probes {probe}");
    }
}
