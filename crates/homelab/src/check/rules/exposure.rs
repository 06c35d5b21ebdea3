//! exposure/*: the tunnel is the only way in — routes and Ingresses match, tcp routes end at their fixed Service, nothing bypasses the tunnel or the firewall.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::tree::Object;
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn exposure_route_ingress(&mut self) {
        let tree = self.tree;
        let hosts = self.ingress_hosts();
        for route in &tree.facts.tunnel.route {
            let host = format!("{}.{}", route.name.get_ref(), tree.facts.domain);
            let offset = route.name.span().start;
            match route.kind.as_str() {
                "http" => {
                    let count = hosts.get(&host).map_or(0, Vec::len);
                    if count != 1 {
                        self.emit(
                            &rules::ROUTE_INGRESS,
                            Place::Facts(offset),
                            format!(
                                "http route {host} is served by {count} Ingresses; exactly one \
                                 expected"
                            ),
                        );
                    }
                }
                "tcp" => {}
                other => self.emit(
                    &rules::ROUTE_INGRESS,
                    Place::Facts(offset),
                    format!("route {host}: kind {other:?} is neither \"http\" nor \"tcp\""),
                ),
            }
        }
    }

    pub(super) fn exposure_ingress_unrouted(&mut self) {
        let tree = self.tree;
        let routed: BTreeSet<String> = tree
            .facts
            .tunnel
            .route
            .iter()
            .filter(|r| r.kind == "http")
            .map(|r| format!("{}.{}", r.name.get_ref(), tree.facts.domain))
            .collect();
        for (host, ingresses) in &self.ingress_hosts() {
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
    }

    /// A tcp route ends at its app's Service with the route's fixed cluster IP and port; a fixed
    /// cluster IP exists for a tcp route to end at, so any other is a leftover.
    pub(super) fn exposure_tcp_route(&mut self) {
        let tree = self.tree;
        for route in tree.facts.tunnel.route.iter().filter(|r| r.kind == "tcp") {
            let host = format!("{}.{}", route.name.get_ref(), tree.facts.domain);
            let offset = route.name.span().start;
            let (Some(ip), Some(port)) = (&route.cluster_ip, route.port) else {
                self.emit(
                    &rules::TCP_ROUTE,
                    Place::Facts(offset),
                    format!("tcp route {host} needs cluster-ip and port"),
                );
                continue;
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
                self.emit(
                    &rules::TCP_ROUTE,
                    Place::Facts(offset),
                    format!(
                        "tcp route {host}: no Service in namespace {} has clusterIP {ip} and \
                         port {port}",
                        route.app
                    ),
                );
            }
        }
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
    }

    pub(super) fn exposure_service_type(&mut self) {
        for service in self.objects().filter(|o| kind(&o.node) == "Service") {
            for field in ["externalIPs", "loadBalancerIP"] {
                if let Some(value) = service.node.path(&["spec", field]) {
                    self.at(
                        &rules::SERVICE_TYPE,
                        service,
                        value,
                        format!(
                            "Service {}/{} sets {field}: kube-proxy forwards that traffic before \
                             the host firewall sees it",
                            namespace(&service.node),
                            name(&service.node)
                        ),
                    );
                }
            }
            if let Some(type_) = service.node.path(&["spec", "type"])
                && matches!(type_.scalar_text().as_str(), "NodePort" | "LoadBalancer")
            {
                self.at(
                    &rules::SERVICE_TYPE,
                    service,
                    type_,
                    format!(
                        "Service {}/{} is a {}",
                        namespace(&service.node),
                        name(&service.node),
                        type_.scalar_text()
                    ),
                );
            }
        }
    }

    pub(super) fn exposure_host_network(&mut self) {
        for object in self.objects() {
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
    }

    pub(super) fn exposure_firewall(&mut self) {
        let firewall = &self.tree.facts.firewall;
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
}

impl<'a> Checker<'a> {
    /// Each hostname the Ingresses serve, with the Ingresses (once each) and the node naming it.
    fn ingress_hosts(&self) -> BTreeMap<String, Vec<(&'a Object, &'a Node)>> {
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
        hosts
    }
}
