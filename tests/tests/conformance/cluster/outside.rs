//! Addresses outside every pod and node (a host on the node's network with no
//! Pod object): only `networks` peers match them. `namespaces` and `pods`
//! peers never do, in either direction, so traffic from such a host is judged
//! only by rules that name its addresses, and an egress Deny of "every pod"
//! leaves it reachable. The Baseline tier's usual shape (pods accepted, the
//! rest of the world denied) is the control.

use super::{ALL_V4, cases, cnp, documents};
use crate::fixture::*;

#[test]
fn only_networks_peers_match_addresses_outside_every_pod() {
    let mut fx = Fixture::new();
    fx.add_outside_host(0, "w");
    let (w4, w6) = (fx.ip("outside/w", V4), fx.ip("outside/w", V6));
    fx.apply(
        "outside",
        &documents(&[
            // x/a: every pod denied on port 80, w's addresses on port 81.
            cnp(
                "x-a-egress",
                "Admin",
                10,
                &format!(
                    "subject:\n  pods:\n    namespaceSelector: {{matchLabels: {{ns: x}}}}\n    podSelector: {{matchLabels: {{pod: a}}}}\negress:\n- name: every-pod-on-80\n  action: Deny\n  to:\n  - pods: {{namespaceSelector: {{}}, podSelector: {{}}}}\n  - namespaces: {{}}\n  protocols:\n  - tcp: {{destinationPort: {{number: 80}}}}\n  - udp: {{destinationPort: {{number: 80}}}}\n  - sctp: {{destinationPort: {{number: 80}}}}\n- name: w-on-81\n  action: Deny\n  to:\n  - networks: [\"{w4}/32\", \"{w6}/128\"]\n  protocols:\n  - tcp: {{destinationPort: {{number: 81}}}}\n  - udp: {{destinationPort: {{number: 81}}}}\n  - sctp: {{destinationPort: {{number: 81}}}}"
                ),
            ),
            // y/a: ingress from every namespace and every pod denied.
            cnp(
                "y-a-ingress",
                "Admin",
                10,
                "subject:\n  pods:\n    namespaceSelector: {matchLabels: {ns: y}}\n    podSelector: {matchLabels: {pod: a}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {}\n  - pods: {namespaceSelector: {}, podSelector: {}}",
            ),
            // z: pods accepted, the rest of the world denied.
            cnp(
                "z-egress",
                "Baseline",
                10,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\negress:\n- action: Accept\n  to:\n  - namespaces: {}\n- action: Deny\n  to:\n  - networks: [0.0.0.0/0, \"::/0\"]",
            ),
        ]),
    );
    let table = |_: Proto, port: u16, _: Family| {
        let mut r = fx.reach(true);
        r.deny("*/*", "y/a")
            .allow("outside/w", "y/a")
            .deny("z/*", "outside/w");
        if port == 80 {
            r.deny("x/a", "*/*").allow("x/a", "outside/w");
        } else {
            r.deny("x/a", "outside/w");
        }
        r
    };
    let r = table(Tcp, 80, V4);
    assert!(r.get_by_id("outside/w", "y/a") && !r.get_by_id("x/b", "y/a"));
    assert!(r.get_by_id("x/a", "outside/w") && !r.get_by_id("x/a", "z/c"));
    let mut on = ALL_V4.to_vec();
    on.extend([(Tcp, 80, V6), (Udp, 81, V6)]);
    fx.expect(&cases(&on, table));
}
