//! exposure/*: the tunnel is the only way in — routes and Ingresses match, tcp routes end at their fixed Service, nothing bypasses the tunnel or the firewall.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::tree::{self, Object};
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn exposure(&mut self) {
        let tree = self.tree;
        let domain = &tree.facts.domain;
        let mut hosts: BTreeMap<String, Vec<(&Object, &Node)>> = BTreeMap::new();
        for ingress in self.objects().filter(|o| kind(&o.node) == "Ingress") {
            for rule in ingress
                .node
                .path(&["spec", "rules"])
                .map(Node::items)
                .unwrap_or_default()
            {
                if let Some(host) = rule.get("host") {
                    let seen = hosts.entry(host.scalar_text()).or_default();
                    if !seen.iter().any(|(o, _)| std::ptr::eq(*o, ingress)) {
                        seen.push((ingress, host));
                    }
                }
            }
        }
        let mut routed = BTreeSet::new();
        for route in &tree.facts.tunnel.route {
            let host = format!("{}.{domain}", route.name.get_ref());
            let offset = route.name.span().start;
            match route.kind.as_str() {
                "http" => {
                    routed.insert(host.clone());
                    let count = hosts.get(&host).map_or(0, Vec::len);
                    if count != 1 {
                        self.emit(&rules::ROUTE_INGRESS, Place::Facts(offset),
                            format!("http route {host} is served by {count} Ingresses; exactly one expected"),
                        );
                    }
                }
                "tcp" => self.tcp_route(route, &host, offset),
                other => self.emit(
                    &rules::ROUTE_INGRESS,
                    Place::Facts(offset),
                    format!("route {host}: kind {other:?} is neither \"http\" nor \"tcp\""),
                ),
            }
        }
        // A fixed cluster IP exists for a tcp route to end at; any other is a leftover.
        let tcp_ips: BTreeSet<&str> = tree
            .facts
            .tunnel
            .route
            .iter()
            .filter(|r| r.kind == "tcp")
            .filter_map(|r| r.cluster_ip.as_deref())
            .collect();
        for service in self.objects().filter(|o| kind(&o.node) == "Service") {
            if let Some(ip) = service.node.path(&["spec", "clusterIP"])
                && ip.scalar_text() != "None"
                && !tcp_ips.contains(ip.scalar_text().as_str())
            {
                self.at(
                    &rules::TCP_ROUTE,
                    service,
                    ip,
                    format!(
                        "Service {}/{} has a fixed cluster IP {} that no tcp route uses",
                        namespace(&service.node),
                        name(&service.node),
                        ip.scalar_text()
                    ),
                );
            }
        }
        for (host, ingresses) in &hosts {
            if !routed.contains(host) {
                for (ingress, node) in ingresses {
                    self.at(
                        &rules::INGRESS_UNROUTED,
                        ingress,
                        node,
                        format!("Ingress host {host} is not an http route in homelab.toml"),
                    );
                }
            }
        }
        for object in self.objects() {
            for field in ["externalIPs", "loadBalancerIP"] {
                if kind(&object.node) == "Service"
                    && let Some(value) = object.node.path(&["spec", field])
                {
                    self.at(
                        &rules::SERVICE_TYPE,
                        object,
                        value,
                        format!(
                            "Service {}/{} sets {field}: kube-proxy forwards that traffic before the host firewall sees it",
                            namespace(&object.node),
                            name(&object.node)
                        ),
                    );
                }
            }
            if kind(&object.node) == "Service"
                && let Some(kind_) = object.node.path(&["spec", "type"])
                && matches!(kind_.scalar_text().as_str(), "NodePort" | "LoadBalancer")
            {
                self.at(
                    &rules::SERVICE_TYPE,
                    object,
                    kind_,
                    format!(
                        "Service {}/{} is a {}",
                        namespace(&object.node),
                        name(&object.node),
                        kind_.scalar_text()
                    ),
                );
            }
            let Some(spec) = pod_spec(&object.node) else {
                continue;
            };
            if let Some(host) = spec.get("hostNetwork")
                && is_true(Some(host))
            {
                self.at(
                    &rules::HOST_NETWORK,
                    object,
                    host,
                    format!("{}: hostNetwork: true", label(&object.node)),
                );
            }
            for (container, _) in containers(spec) {
                for port in container.get("ports").map(Node::items).unwrap_or_default() {
                    if let Some(host_port) = port.get("hostPort") {
                        self.at(
                            &rules::HOST_NETWORK,
                            object,
                            host_port,
                            format!(
                                "{}: hostPort {}",
                                label(&object.node),
                                host_port.scalar_text()
                            ),
                        );
                    }
                }
            }
        }
        let firewall = &tree.facts.firewall;
        match &firewall.tcp_ports {
            Some(ports) if ports.get_ref() == &vec![22, 6443] => {}
            Some(ports) => self.emit(
                &rules::FIREWALL,
                Place::Facts(ports.span().start),
                format!("[firewall] tcp-ports = {:?}", ports.get_ref()),
            ),
            None => self.emit(
                &rules::FIREWALL,
                Place::Facts(0),
                "homelab.toml has no [firewall] tcp-ports".to_owned(),
            ),
        }
        if let Some(udp) = &firewall.udp_ports
            && !udp.get_ref().is_empty()
        {
            self.emit(
                &rules::FIREWALL,
                Place::Facts(udp.span().start),
                format!("[firewall] udp-ports = {:?}", udp.get_ref()),
            );
        }
    }

    pub(super) fn tcp_route(&mut self, route: &tree::Route, host: &str, offset: usize) {
        let (Some(ip), Some(port)) = (&route.cluster_ip, route.port) else {
            self.emit(
                &rules::TCP_ROUTE,
                Place::Facts(offset),
                format!("tcp route {host} needs cluster-ip and port"),
            );
            return;
        };
        let found = self.objects().any(|o| {
            kind(&o.node) == "Service"
                && namespace(&o.node) == route.app
                && o.node
                    .path(&["spec", "clusterIP"])
                    .map(Node::scalar_text)
                    .as_deref()
                    == Some(ip.as_str())
                && o.node
                    .path(&["spec", "ports"])
                    .map(Node::items)
                    .unwrap_or_default()
                    .iter()
                    .any(|p| p.get("port").map(Node::scalar_text) == Some(port.to_string()))
        });
        if !found {
            self.emit(&rules::TCP_ROUTE, Place::Facts(offset),
                format!("tcp route {host}: no Service in namespace {} has clusterIP {ip} and port {port}", route.app),
            );
        }
    }
}
