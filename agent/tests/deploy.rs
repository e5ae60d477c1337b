//! Test that the manifests in `deploy/` are what the agent needs and no more:
//! they parse into their Kubernetes types, RBAC grants exactly what the code
//! watches, and the DaemonSet's arguments and settings are accepted by the CLI.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use palisade_agent::cli::{Cli, Command, InstallCniArgs};
use palisade_agent::source::Kind;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn load<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = deploy_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse as its type: {e}", path.display()))
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type_and_kustomize_lists_them_all() {
    let _: Namespace = load("namespace.yaml");
    let _: ServiceAccount = load("serviceaccount.yaml");
    let _: ClusterRole = load("clusterrole.yaml");
    let _: ClusterRoleBinding = load("clusterrolebinding.yaml");
    let _: ConfigMap = load("configmap.yaml");
    let _: DaemonSet = load("daemonset.yaml");
    let kustomization: serde_yaml::Value = load("kustomization.yaml");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("kustomization resources")
        .iter()
        .map(|v| v.as_str().expect("resource path").to_string())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(deploy_dir())
        .expect("deploy dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml must list every manifest"
    );
}

#[test]
fn cluster_role_grants_exactly_read_access_to_the_watched_kinds() {
    let role: ClusterRole = load("clusterrole.yaml");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(
            verbs,
            ["get", "list", "watch"],
            "rule {rule:?} grants more than reading"
        );
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                granted.insert((group.clone(), resource));
            }
        }
    }
    let watched: BTreeSet<(String, String)> = Kind::ALL
        .iter()
        .chain(&Kind::OPTIONAL)
        .map(|k| {
            let (group, resource) = k.rbac();
            (group.to_string(), resource.to_string())
        })
        .collect();
    assert_eq!(granted, watched);
}

#[test]
fn role_binding_and_daemonset_reference_objects_that_exist() {
    let sa: ServiceAccount = load("serviceaccount.yaml");
    let cm: ConfigMap = load("configmap.yaml");
    let role: ClusterRole = load("clusterrole.yaml");
    let binding: ClusterRoleBinding = load("clusterrolebinding.yaml");
    let ds: DaemonSet = load("daemonset.yaml");
    assert_eq!(
        Some(binding.role_ref.name.as_str()),
        role.metadata.name.as_deref()
    );
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(Some(subject.name.as_str()), sa.metadata.name.as_deref());
    assert_eq!(subject.namespace, sa.metadata.namespace);
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(pod.host_network, Some(true));
    let container = &pod.containers[0];
    let from = container.env_from.as_ref().expect("envFrom")[0]
        .config_map_ref
        .as_ref()
        .expect("configMapRef");
    assert_eq!(Some(from.name.as_str()), cm.metadata.name.as_deref());
    let caps = container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON"]));
}

#[test]
fn daemonset_arguments_and_settings_are_accepted_by_the_cli() {
    let ds: DaemonSet = load("daemonset.yaml");
    let cm: ConfigMap = load("configmap.yaml");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    let container = &pod.containers[0];
    let mut argv = vec!["palisade".to_string()];
    argv.extend(container.args.clone().unwrap_or_default());
    // Each ConfigMap key must be the environment variable of a flag; pass its
    // value through that flag so the parser checks it.
    let cli = Cli::command();
    let mut flags = Vec::new();
    for (key, value) in cm.data.unwrap_or_default() {
        let arg = cli
            .get_arguments()
            .chain(cli.get_subcommands().flat_map(|s| s.get_arguments()))
            .find(|a| a.get_env().is_some_and(|e| e == key.as_str()))
            .unwrap_or_else(|| panic!("ConfigMap key {key} is not read by any flag"));
        flags.push(format!(
            "--{}={value}",
            arg.get_long().expect("env flags are long flags")
        ));
    }
    // Global flags may follow the subcommand.
    argv.extend(flags);
    let parsed = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Command::Run(run) = parsed.command else {
        panic!("the DaemonSet must run `palisade run`")
    };
    let ports: BTreeSet<u16> = container
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port as u16)
        .collect();
    assert!(ports.contains(&run.metrics_addr.port()) && ports.contains(&run.health_addr.port()));
    let env: BTreeSet<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains("NODE_NAME"),
        "NODE_NAME comes from the downward API"
    );
    // The CNI socket the agent listens on lives on the hostPath the plugin sees.
    let mounts: BTreeSet<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(
        run.cni_socket
            .parent()
            .is_some_and(|d| mounts.contains(d.to_str().expect("utf-8")))
    );

    let init = &pod.init_containers.as_ref().expect("init containers")[0];
    let install = install_cni_args(init);
    assert!(
        install.watch_seconds.is_none(),
        "the init container returns"
    );
    let chain = pod
        .containers
        .iter()
        .find(|c| c.name == "cni-chain")
        .expect("a container that keeps the plugin chained");
    let watch = install_cni_args(chain);
    assert!(watch.watch_seconds.is_some(), "it keeps watching");
    assert_eq!(
        (&watch.cni_bin_dir, &watch.cni_conf_dir, &watch.socket),
        (&install.cni_bin_dir, &install.cni_conf_dir, &install.socket),
        "it keeps what the init container installed"
    );
}

/// Parses a container's `palisade install-cni` arguments and checks that it
/// mounts the CNI directories they name.
fn install_cni_args(container: &Container) -> InstallCniArgs {
    let Command::InstallCni(install) = parse_args(container).command else {
        panic!("{} must run `palisade install-cni`", container.name)
    };
    let mounts = mount_paths(container);
    for dir in [&install.cni_bin_dir, &install.cni_conf_dir] {
        assert!(
            mounts.iter().any(|m| Path::new(m) == dir),
            "{} mounts {}",
            container.name,
            dir.display()
        );
    }
    install
}

/// A container's arguments as `palisade` parses them.
fn parse_args(container: &Container) -> Cli {
    let mut argv = vec!["palisade".to_string()];
    argv.extend(container.args.clone().unwrap_or_default());
    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn mount_paths(container: &Container) -> Vec<String> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.clone())
        .collect()
}

/// The uninstall DaemonSet (deploy/uninstall/, outside the kustomization)
/// runs what `palisade` accepts: first `install-cni --uninstall` with the CNI
/// directories mounted where the command looks, then `cleanup` with the bpffs
/// directory it cleans.
#[test]
fn uninstall_daemonset_unchains_the_plugin_then_cleans_the_pins() {
    let ds: DaemonSet = load("uninstall/daemonset.yaml");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    let init = pod.init_containers.expect("init containers");
    assert_eq!(init.len(), 2, "uninstall-cni, then cleanup");
    assert!(install_cni_args(&init[0]).uninstall);
    let Command::Cleanup(cleanup) = parse_args(&init[1]).command else {
        panic!("the second init container must run `palisade cleanup`")
    };
    assert!(
        mount_paths(&init[1])
            .iter()
            .any(|m| cleanup.bpffs.starts_with(m)),
        "{} is not under a mount of the cleanup container",
        cleanup.bpffs.display()
    );
    // In tc mode the programs hang off the host's pod interfaces as netlink
    // filters, which only a cleanup in the host network namespace with
    // NET_ADMIN can see and remove.
    assert_eq!(
        pod.host_network,
        Some(true),
        "cleanup must see the node's interfaces"
    );
    let added = init[1]
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    for cap in ["BPF", "NET_ADMIN"] {
        assert!(
            added.iter().any(|a| a == cap),
            "cleanup lacks {cap}: {added:?}"
        );
    }
}

/// The agent's pods use the host network and hostPath volumes, which only the
/// `privileged` Pod Security level admits: its namespace must say so, or a
/// cluster whose default level is `baseline` or `restricted` refuses them.
#[test]
fn the_agents_namespace_admits_what_its_daemonset_needs() {
    let ns: Namespace = load("namespace.yaml");
    let labels = ns.metadata.labels.unwrap_or_default();
    let ds: DaemonSet = load("daemonset.yaml");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    let needs_privileged = pod.host_network == Some(true)
        || pod.volumes.iter().flatten().any(|v| v.host_path.is_some());
    assert!(
        needs_privileged,
        "the DaemonSet no longer needs the privileged level: lower the label"
    );
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged"),
        "{labels:?}"
    );
    assert_eq!(
        ds.metadata.namespace.as_deref(),
        ns.metadata.name.as_deref(),
        "the DaemonSet runs in the labelled namespace"
    );
}
