//! What can be checked of ZeroClaw's configuration without decrypting it: the Secret holds a
//! `config.toml` key (SOPS leaves key names readable), the Deployment mounts that Secret and
//! copies the file to where ZeroClaw v0.8.4's dist image reads it: with HOME=/zeroclaw-data and
//! ZEROCLAW_DATA_DIR=/zeroclaw-data/data (its Dockerfile), the config dir resolves to
//! /zeroclaw-data/.zeroclaw (zeroclaw-config schema.rs, resolve_config_dir_for_data).

use std::path::{Path, PathBuf};

const APP: &str = "flux/clusters/azalab-0/manifests/apps/zeroclaw";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn yaml(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join(APP).join(file)).expect(file);
    serde_saphyr::from_str(&text).expect("YAML")
}

#[test]
fn zeroclaw_reads_the_config_toml_the_secret_holds_from_where_its_image_looks() {
    let secret = yaml("secret.sops.yaml");
    assert!(
        secret["stringData"]["config.toml"].is_string(),
        "the Secret has a config.toml key"
    );
    let secret_name = secret["metadata"]["name"].as_str().expect("secret name");
    let deployment = yaml("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == secret_name)
        .expect("a volume from the Secret");
    let volume_name = volume["name"].as_str().expect("volume name");
    let init = &pod["initContainers"][0];
    let mount = init["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == volume_name)
        .expect("the init container mounts the Secret");
    let script = init["command"][2].as_str().expect("the copy script");
    let from = format!("{}/config.toml", mount["mountPath"].as_str().expect("path"));
    assert!(
        script.contains(&format!("cp {from} /zeroclaw-data/.zeroclaw/config.toml")),
        "the init container copies {from} to /zeroclaw-data/.zeroclaw/config.toml: {script}"
    );
    let main = &pod["containers"][0];
    let data = main["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/zeroclaw-data")
        .expect("the data volume at the image's HOME");
    assert_eq!(data["name"], "data");
    // The image's own data dir must not hold a config.toml that would win over the copy.
    assert!(
        !script.contains("/zeroclaw-data/data/config.toml"),
        "nothing writes a config into ZEROCLAW_DATA_DIR"
    );
}
