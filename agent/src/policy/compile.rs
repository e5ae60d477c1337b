//! The compiler: [`ClusterState`] -> [`DatapathPlan`] for one node.
//!
//! 1. Local endpoints and the policies selecting each (isolation per direction).
//! 2. The atoms (peer questions) of the rules of those policies, and identities
//!    for every remote address ([`super::identity`], kept up to date by
//!    [`super::identity_cache`]).
//! 3. Allow entries: endpoints whose applying policies (and, for ingress, whose
//!    container ports) are equal get the same entries, so each distinct group
//!    is expanded once and stamped per endpoint.
//! 4. Service ClusterIPs: allowed on a service port when every ready backend is.
//!
//! Ids (identities, endpoints, rules) are stable across compiles of the same
//! [`Compiler`], and so is its work: a policy's rule index (and its rules'
//! origins) is kept while the policy stays the same (`network_rules`,
//! `cluster_rules`, `origins`), identities are caught up from the state's
//! journal of changes ([`super::identity_cache`]), and a group's expansion
//! is reused until its policies or its atoms' identities change.
//! A tiered group's decisions outlive its expansion: they are kept by the
//! content of the rules each signature matches (`tiered::Memo`), so a
//! re-expansion decides again only what a change touched. The plan's entries
//! are the members' stamped parts, shared by pointer from plan to plan.
//! The result is always the plan a compile from scratch gives (property test
//! `incremental_compiles_equal_compiles_from_scratch`).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use palisade_common::ids::{EndpointId, IdentityId, RuleId};

use super::adopt::{self, PinnedIds};
use super::changed::Changed;
use super::cluster_rules::{Allocators, ClusterRules, IndexedPolicy, RuleSlot, RuleTargets};
use super::identity::{Atom, AtomId, AtomTable, DescriptionCache, Identities};
use super::identity_cache::{IdentityCache, IdentityChanges, Inputs};
use super::ids::IdAllocator;
use super::lookup::{ipcache_lookup, l4_matches};
use super::network_rules::{IndexedNetworkPolicy, NetworkRules};
use super::origins::{Indexed, Origins};
use super::plan::{DatapathPlan, EndpointPlan, EntryPart, L4Match, PlanEntries, RuleKey};
use super::subjects::Subjects;
use super::tiered::{self, SelfFix, ServicePort, TierRule};
use crate::state::ClusterState;
use crate::state::cnp::{self, ClusterNetworkPolicy};
use crate::state::journal::Mark;
use crate::state::model::{
    ALLOWED_SOURCE_PREFIXES_ANNOTATION, ContainerPort, Pod, Protocol, Service, SourcePrefixes,
};
use crate::state::netpol::{NetworkPolicy, PortRef, Rule};
use crate::state::{Direction, PodRef, PolicyRef, Rejection};

/// Endpoints sharing a direction, applying NetworkPolicies and
/// ClusterNetworkPolicies (by name) and (for ingress) container ports get
/// the same entries.
type GroupKey = (Direction, Vec<PolicyRef>, Vec<String>, Vec<ContainerPort>);

/// A group's entries and what they were computed from.
#[derive(Debug, Default)]
struct Expansion {
    entries: Vec<Entry>,
    /// Deny entries (only ClusterNetworkPolicy makes them).
    denies: Vec<Entry>,
    /// Service ports allowed to members that are the only denied backends.
    self_fixes: Vec<SelfFix>,
    /// Atoms of the group's rules: their identities are in the entries.
    atoms: HashSet<AtomId>,
    /// Port names of its egress rules: resolved per peer identity.
    names: HashSet<(String, Protocol)>,
    /// For a tiered egress group, the fingerprint of the Service ports it
    /// was computed with: valid while they stay the same.
    services: Option<u64>,
    /// Distinct for every expansion a compiler computes: a member's stamp
    /// is valid while its group's expansion is the one it was stamped from.
    generation: u64,
}

/// What a group of endpoints keeps from compile to compile.
#[derive(Debug, Default)]
struct GroupCache {
    /// Its entries, while still valid.
    expansion: Option<Expansion>,
    /// Its tiered decisions by rule content: they outlive expansions.
    memo: tiered::Memo,
    /// The last compile that had the group.
    seen_in: u64,
}

/// Compiles plans, keeping ids stable across compiles and reusing what the
/// changes since the previous compile leave valid.
#[derive(Debug)]
pub struct Compiler {
    atoms: IdAllocator<Atom>,
    identities: IdAllocator<Vec<AtomId>>,
    endpoints: IdAllocator<PodRef>,
    rules: IdAllocator<RuleSlot>,
    descriptions: DescriptionCache,
    remote: IdentityCache,
    /// Per group of endpoints, its expansion and tiered decisions.
    groups: HashMap<GroupKey, GroupCache>,
    /// Counts compiles: a group not seen in the latest one is dropped.
    compiles: u64,
    /// Numbers ClusterNetworkPolicy rules by what their decisions read.
    rule_contents: tiered::RuleContents,
    /// The last compile's NetworkPolicy rule index.
    network_rules: NetworkRules,
    /// The last compile's ClusterNetworkPolicy rule index.
    cluster_rules: ClusterRules,
    /// The rule origins of those indices.
    origins: Origins,
    /// Which ClusterNetworkPolicies' subjects hold each local pod.
    subjects: Subjects,
    /// Those rules' targets, while their atoms' identities stay the same.
    cluster_targets: RuleTargets,
    /// Each endpoint's entries per direction, as last stamped.
    stamps: HashMap<(EndpointId, Direction), Stamp>,
    /// The generation of the last expansion computed.
    last_generation: u64,
    /// The state's point the expansions were computed at.
    mark: Option<Mark>,
    /// Namespaces whose pods' `palisade.dev/allowed-source-prefixes` is
    /// honoured (anyone who may create a pod may annotate it).
    source_prefix_namespaces: BTreeSet<String>,
}

impl Default for Compiler {
    fn default() -> Self {
        Self::new()
    }
}

/// One entry of a group's expansion: identity, L4, rule.
type Entry = (IdentityId, L4Match, RuleId);

impl Compiler {
    /// A compiler with no ids allocated yet.
    pub fn new() -> Self {
        Compiler {
            atoms: IdAllocator::new(1),
            identities: IdAllocator::new(IdentityId::FIRST_ALLOCATED),
            endpoints: IdAllocator::new(1),
            rules: IdAllocator::new(1),
            descriptions: DescriptionCache::default(),
            remote: IdentityCache::default(),
            groups: HashMap::new(),
            compiles: 0,
            rule_contents: tiered::RuleContents::default(),
            network_rules: NetworkRules::default(),
            cluster_rules: ClusterRules::default(),
            origins: Origins::default(),
            subjects: Subjects::default(),
            cluster_targets: RuleTargets::default(),
            stamps: HashMap::new(),
            last_generation: 0,
            mark: None,
            source_prefix_namespaces: BTreeSet::new(),
        }
    }

    /// Honours `palisade.dev/allowed-source-prefixes` on pods of these
    /// namespaces (and reports it as ignored elsewhere).
    pub fn with_source_prefix_namespaces(mut self, namespaces: BTreeSet<String>) -> Self {
        self.source_prefix_namespaces = namespaces;
        self
    }

    /// Takes over the ids of a previous agent's pinned state (see
    /// [`super::adopt`]), given this compiler's first plan: returns whether
    /// any id moved, in which case the next compile starts from scratch and
    /// gives the renumbered plan.
    pub fn adopt_pinned_ids(&mut self, plan: &DatapathPlan, pinned: &PinnedIds) -> bool {
        let wanted = adopt::renumbering(plan, pinned);
        let moved = self
            .endpoints
            .renumber(&wanted.endpoints, &pinned.endpoint_ids)
            | self
                .identities
                .renumber(&wanted.identities, &pinned.identity_ids);
        if moved {
            self.descriptions = DescriptionCache::default();
            self.remote = IdentityCache::default();
            self.groups.clear();
            self.mark = None;
        }
        moved
    }

    /// The plan for node `node_name`: its pods are the endpoints, its
    /// addresses (and its hostNetwork pods') are HOST.
    pub fn compile(&mut self, cluster: &ClusterState, node_name: &str) -> DatapathPlan {
        let host = cluster.node_addresses(node_name);
        let locals = cluster
            .pods_on(node_name)
            .filter(|p| p.is_endpoint())
            .collect();
        self.compile_locals(cluster, locals, &host)
    }

    /// The plan with the endpoint pods accepted by `is_local` as endpoints and
    /// `host` as the node's own addresses.
    pub fn compile_for(
        &mut self,
        cluster: &ClusterState,
        is_local: impl Fn(&Pod) -> bool,
        host: &BTreeSet<IpAddr>,
    ) -> DatapathPlan {
        let locals = cluster
            .pods()
            .filter(|p| p.is_endpoint() && is_local(p))
            .collect();
        self.compile_locals(cluster, locals, host)
    }

    /// The plan for the endpoint pods `pods` (in key order).
    fn compile_locals(
        &mut self,
        cluster: &ClusterState,
        pods: Vec<&Pod>,
        host: &BTreeSet<IpAddr>,
    ) -> DatapathPlan {
        let policies: Vec<&NetworkPolicy> = cluster.policies().collect();
        let cluster_policies = cluster.cluster_policies();
        let changed = Changed::since(cluster, self.mark);
        let subjects = self
            .subjects
            .update(cluster, &cluster_policies, &pods, changed.as_ref());
        let locals = Locals::new(&policies, &cluster_policies, pods, subjects);
        let mut table = AtomTable::default();
        let rule_index = self.index_rules(changed.as_ref(), &locals, &mut table);
        let services = locals.egress_services(cluster);
        let ids = self.update_identities(cluster, changed.as_ref(), &services, host, &mut table);
        let mut pod_rejections = Vec::new();
        let endpoints = self.plan_endpoints(cluster, &locals, &mut pod_rejections);
        let endpoint_ids: Vec<EndpointId> = endpoints.iter().map(|ep| ep.id).collect();
        let service_ports = locals.tiered_service_ports(cluster, &services, &ids);
        let ctx = RuleContext {
            policies: &policies,
            network_rules: &rule_index.network,
            cluster_rules: &rule_index.cluster,
            ids: &ids,
            services_fingerprint: fingerprint(&service_ports),
            service_ports: &service_ports,
            cluster_targets: RefCell::new(std::mem::take(&mut self.cluster_targets)),
        };
        let (rules, denies) = self.entries(cluster, &locals, &endpoint_ids, &ctx, &services);
        self.cluster_targets = ctx.cluster_targets.into_inner();
        self.cluster_targets.finish();
        self.mark = Some(cluster.mark());

        let plan = DatapathPlan {
            identities: self.descriptions.describe(&ids, &table),
            ipcache: ids.ipcache,
            host_addresses: host.clone(),
            endpoints: locals
                .pods
                .iter()
                .map(|p| p.pod_ref())
                .zip(endpoints)
                .collect(),
            rules,
            denies,
            rule_origins: self.origins.update(
                (rule_index.network.iter().flatten())
                    .map(|p| Indexed::Network(Arc::clone(p)))
                    .chain((rule_index.cluster.values()).map(|p| Indexed::Cluster(Arc::clone(p)))),
            ),
            rejections: all_rejections(cluster, pod_rejections),
        };
        self.finish_allocators();
        plan
    }

    /// Numbers the rules of every policy that applies to a local pod and
    /// interns their peers' atoms (and egress port names) into `table`
    /// (kept from the last compile for the policies that did not change).
    fn index_rules(
        &mut self,
        changed: Option<&Changed<'_>>,
        locals: &Locals<'_>,
        table: &mut AtomTable,
    ) -> RuleIndex {
        let mut relevant: Vec<usize> = locals.applying.iter().flatten().copied().collect();
        relevant.sort_unstable();
        relevant.dedup();
        let mut index = RuleIndex {
            network: vec![None; locals.policies.len()],
            cluster: HashMap::new(),
        };
        let indexed = self.network_rules.index(
            relevant.iter().map(|&pi| (pi, locals.policies[pi])),
            changed.map(|c| &c.policies),
            &mut self.atoms,
            &mut self.rules,
            table,
        );
        for (pi, policy) in indexed {
            index.network[pi] = Some(policy);
        }
        self.index_cluster_rules(changed, locals, table, &mut index);
        index
    }

    /// Numbers the Accept and Deny rules of every ClusterNetworkPolicy that
    /// applies to a local pod and interns their peers' atoms (kept from the
    /// last compile for the policies that did not change since).
    fn index_cluster_rules(
        &mut self,
        changed: Option<&Changed<'_>>,
        locals: &Locals<'_>,
        table: &mut AtomTable,
        index: &mut RuleIndex,
    ) {
        let mut relevant: Vec<usize> = locals.subjects.iter().flatten().copied().collect();
        relevant.sort_unstable();
        relevant.dedup();
        let indexed = self.cluster_rules.index(
            relevant.iter().map(|&ci| (ci, locals.cluster_policies[ci])),
            changed.map(|c| &c.cluster_policies),
            &mut Allocators {
                atoms: &mut self.atoms,
                rules: &mut self.rules,
                contents: &mut self.rule_contents,
            },
            table,
        );
        index.cluster.extend(indexed);
    }

    /// Brings the remote identities up to date for the atoms of `table` and
    /// drops the expansions that leaves stale.
    fn update_identities(
        &mut self,
        cluster: &ClusterState,
        changed: Option<&Changed<'_>>,
        services: &[&Service],
        host: &BTreeSet<IpAddr>,
        table: &mut AtomTable,
    ) -> Identities {
        let (ids, changes) = self.remote.update(
            &Inputs {
                cluster,
                services,
                host,
            },
            table,
            &mut self.atoms,
            &mut self.identities,
        );
        self.forget_stale_expansions(changed, changes);
        ids
    }

    /// The endpoint plan of each local pod, in local order.
    fn plan_endpoints(
        &mut self,
        cluster: &ClusterState,
        locals: &Locals<'_>,
        pod_rejections: &mut Vec<Rejection>,
    ) -> Vec<EndpointPlan> {
        let mut endpoints = Vec::with_capacity(locals.pods.len());
        for (l, pod) in locals.pods.iter().enumerate() {
            endpoints.push(EndpointPlan {
                id: EndpointId(self.endpoints.get(&pod.pod_ref())),
                ipv4: pod.ips.iter().find_map(|ip| match ip {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                }),
                ipv6: pod.ips.iter().find_map(|ip| match ip {
                    IpAddr::V6(a) => Some(*a),
                    IpAddr::V4(_) => None,
                }),
                ingress_isolated: locals.enforced(l, Direction::Ingress),
                egress_isolated: locals.enforced(l, Direction::Egress),
                audit: cluster.namespace(&pod.namespace).is_some_and(|n| n.audit()),
                source_prefixes: self.source_prefixes(pod, pod_rejections),
                policies: locals.applying[l]
                    .iter()
                    .map(|&pi| locals.policies[pi].policy_ref())
                    .collect(),
            });
        }
        endpoints
    }

    /// The allow and deny entries of every local endpoint: each group's
    /// expansion (reused when still valid) stamped per member, plus the
    /// Service ClusterIP entries of NetworkPolicy-only egress groups.
    /// Expansions of groups that no longer exist are dropped. A member's
    /// stamp is reused while its expansion, addresses and Service entries
    /// are the same, and the plan's maps are built from the stamps in key
    /// order (endpoint, then direction), so no compile sorts every entry.
    fn entries(
        &mut self,
        cluster: &ClusterState,
        locals: &Locals<'_>,
        endpoint_ids: &[EndpointId],
        ctx: &RuleContext<'_>,
        services: &[&Service],
    ) -> (PlanEntries, PlanEntries) {
        let groups = locals.groups();
        self.compiles += 1;
        let compile = self.compiles;
        let room = self.stamps.len();
        let mut previous = std::mem::replace(&mut self.stamps, HashMap::with_capacity(room));
        let mut last_generation = self.last_generation;
        for ((d, pols, cnps, ports), members) in &groups {
            let key: GroupKey = (
                *d,
                pols.iter()
                    .map(|&pi| locals.policies[pi].policy_ref())
                    .collect(),
                cnps.iter()
                    .map(|&ci| locals.cluster_policies[ci].name.clone())
                    .collect(),
                ports.clone(),
            );
            let pod = locals.pods[members[0]];
            let group = self.groups.entry(key).or_default();
            group.seen_in = compile;
            let stale = group
                .expansion
                .as_ref()
                .is_some_and(|e| e.services.is_some_and(|f| f != ctx.services_fingerprint));
            if stale {
                group.expansion = None;
            }
            let GroupCache {
                expansion, memo, ..
            } = group;
            let expansion = expansion.get_or_insert_with(|| {
                last_generation += 1;
                let mut expansion = ctx.expand(*d, pols, cnps, locals, pod, memo);
                // Sorted once here, so stamping a member needs no sort.
                lowest_rule_per_entry(&mut expansion.entries);
                lowest_rule_per_entry(&mut expansion.denies);
                Expansion {
                    generation: last_generation,
                    ..expansion
                }
            });
            let service = Arc::new(if *d == Direction::Egress && cnps.is_empty() {
                service_entries(cluster, services, ctx.ids, &expansion.entries)
            } else {
                Vec::new()
            });
            for &l in members {
                let at = (endpoint_ids[l], *d);
                let ips = &locals.pods[l].ips;
                let stamp = match previous.remove(&at) {
                    Some(s)
                        if s.generation == expansion.generation
                            && s.ips == *ips
                            && s.service == service =>
                    {
                        s
                    }
                    _ => Stamp::of(at, expansion, ips, Arc::clone(&service)),
                };
                self.stamps.insert(at, stamp);
            }
        }
        self.last_generation = last_generation;
        self.groups.retain(|_, g| g.seen_in == compile);
        let gather = |part: fn(&Stamp) -> &EntryPart| {
            PlanEntries::from_parts(
                self.stamps
                    .iter()
                    .map(|(at, stamp)| (*at, Arc::clone(part(stamp)))),
            )
        };
        (gather(|s| &s.rules), gather(|s| &s.denies))
    }

    /// Frees the ids this compile did not look up.
    fn finish_allocators(&mut self) {
        self.rule_contents.finish();
        self.atoms.finish();
        self.identities.finish();
        self.endpoints.finish();
        self.rules.finish();
    }
}

impl Compiler {
    /// The prefixes a local pod may send from besides its own addresses: its
    /// annotation's, when well-formed and in a listed namespace. Anything
    /// else is reported, and the pod keeps to its own addresses.
    fn source_prefixes(&self, pod: &Pod, rejections: &mut Vec<Rejection>) -> Vec<ipnet::IpNet> {
        let Some(annotation) = &pod.allowed_source_prefixes else {
            return Vec::new();
        };
        let reject = |reason: String| Rejection {
            object: format!("Pod {}", pod.pod_ref()),
            field: format!("metadata.annotations[{ALLOWED_SOURCE_PREFIXES_ANNOTATION}]"),
            reason,
        };
        match annotation {
            SourcePrefixes::Invalid { value, reason } => {
                rejections.push(reject(format!(
                    "{value:?}: {reason}; the pod may send only from its own addresses"
                )));
                Vec::new()
            }
            SourcePrefixes::Valid(_) if !self.source_prefix_namespaces.contains(&pod.namespace) => {
                rejections.push(reject(format!(
                    "ignored: namespace {} is not among the agent's --source-prefix-namespaces; \
                     the pod may send only from its own addresses",
                    pod.namespace
                )));
                Vec::new()
            }
            SourcePrefixes::Valid(prefixes) => prefixes.clone(),
        }
    }

    /// Drops the expansions the changes since the last compile invalidate:
    /// those of changed policies and those whose atoms or egress port names
    /// gained or lost identities; all of them when that is unknown.
    fn forget_stale_expansions(&mut self, changed: Option<&Changed<'_>>, changes: IdentityChanges) {
        let Some(changed) = changed.filter(|_| !changes.rebuilt) else {
            for group in self.groups.values_mut() {
                group.expansion = None;
            }
            self.cluster_targets.forget(None);
            return;
        };
        self.cluster_targets.forget(Some(&changes.atoms));
        let (policies, cluster_policies) = (&changed.policies, &changed.cluster_policies);
        for ((_, pols, cnps, _), group) in &mut self.groups {
            let stale = group.expansion.as_ref().is_some_and(|e| {
                pols.iter().any(|p| policies.contains(p))
                    || cnps.iter().any(|c| cluster_policies.contains(c.as_str()))
                    || !e.atoms.is_disjoint(&changes.atoms)
                    || !e.names.is_disjoint(&changes.names)
            });
            if stale {
                group.expansion = None;
            }
        }
    }
}

/// A hash of the Service ports tiered egress groups were computed with.
fn fingerprint(service_ports: &[ServicePort]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    service_ports.hash(&mut hasher);
    hasher.finish()
}

/// Entries sorted by key; when several rules produce the same key, the
/// lowest rule id wins.
fn lowest_rule_per_key(mut entries: Vec<(RuleKey, RuleId)>) -> Vec<(RuleKey, RuleId)> {
    entries.sort_unstable();
    entries.dedup_by(|later, first| later.0 == first.0);
    entries
}

/// A group's entries sorted by identity and L4, the lowest rule per pair:
/// in the order of the keys they are stamped into.
fn lowest_rule_per_entry(entries: &mut Vec<Entry>) {
    entries.sort_unstable();
    entries.dedup_by(|later, first| (later.0, later.1) == (first.0, first.1));
}

/// Two lists sorted by key with one entry a key, merged; where both have a
/// key, the lower rule.
fn merge_lowest(a: Vec<(RuleKey, RuleId)>, b: Vec<(RuleKey, RuleId)>) -> Vec<(RuleKey, RuleId)> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                let lower = x.1.min(y.1);
                let key = x.0;
                a.next();
                b.next();
                (key, lower)
            }
            (Some(x), Some(y)) => if x.0 < y.0 { a.next() } else { b.next() }.expect("peeked"),
            (Some(_), None) => a.next().expect("peeked"),
            (None, Some(_)) => b.next().expect("peeked"),
            (None, None) => break,
        };
        out.push(next);
    }
    out
}

/// A Service ClusterIP entry of a NetworkPolicy-only egress group: identity,
/// L4, rule credited, and the backends its rules deny.
type ServiceEntry = (IdentityId, L4Match, RuleId, Vec<IpAddr>);

/// One endpoint's entries in one direction, and what they were stamped from.
#[derive(Debug)]
struct Stamp {
    /// [`Expansion::generation`] of the group's expansion.
    generation: u64,
    /// The member's addresses (they decide its self fixes and Service entries).
    ips: Vec<IpAddr>,
    /// The group's Service entries.
    service: Arc<Vec<ServiceEntry>>,
    /// Allow entries, sorted, the lowest rule per key (shared with the plans).
    rules: EntryPart,
    /// Deny entries, sorted, the lowest rule per key (shared with the plans).
    denies: EntryPart,
}

impl Stamp {
    /// The entries of endpoint `at` as a member with addresses `ips` of a
    /// group with `expansion` and Service entries `service`.
    fn of(
        (endpoint, direction): (EndpointId, Direction),
        expansion: &Expansion,
        ips: &[IpAddr],
        service: Arc<Vec<ServiceEntry>>,
    ) -> Stamp {
        let stamp = |identity: IdentityId, l4: L4Match| RuleKey {
            endpoint,
            direction,
            identity,
            l4,
        };
        // The expansion's entries are sorted with one a key: so are these.
        let rules: Vec<(RuleKey, RuleId)> = expansion
            .entries
            .iter()
            .map(|(identity, l4, rule)| (stamp(*identity, *l4), *rule))
            .collect();
        let fixes: Vec<(RuleKey, RuleId)> = expansion
            .self_fixes
            .iter()
            .filter(|f| f.denied.iter().all(|a| ips.contains(a)))
            .map(|f| {
                let l4 = L4Match::Ports {
                    protocol: f.protocol,
                    first: f.port,
                    last: f.port,
                };
                (stamp(f.identity, l4), f.rule)
            })
            .collect();
        let denies: Vec<(RuleKey, RuleId)> = expansion
            .denies
            .iter()
            .map(|(identity, l4, rule)| (stamp(*identity, *l4), *rule))
            .filter(|(k, _)| !fixes.iter().any(|(f, _)| f == k))
            .collect();
        let mut extra = fixes;
        // Denied backends that are the endpoint itself are allowed (self).
        extra.extend(
            service
                .iter()
                .filter(|(_, _, _, denied)| denied.iter().all(|a| ips.contains(a)))
                .map(|(sid, l4, rule, _)| (stamp(*sid, *l4), *rule)),
        );
        Stamp {
            generation: expansion.generation,
            ips: ips.to_vec(),
            service,
            rules: Arc::new(merge_lowest(rules, lowest_rule_per_key(extra))),
            denies: Arc::new(denies),
        }
    }
}

/// Local endpoints of one direction with the same applying policies and
/// ClusterNetworkPolicies (by index) and (for ingress) container ports, and
/// the local indices in each.
type Groups = HashMap<(Direction, Vec<usize>, Vec<usize>, Vec<ContainerPort>), Vec<usize>>;

/// The rules of the policies that select a local pod.
#[derive(Debug, Default)]
struct RuleIndex {
    /// The rules of the NetworkPolicies that apply to a local pod, by
    /// policy index.
    network: Vec<Option<Arc<IndexedNetworkPolicy>>>,
    /// The rules of the ClusterNetworkPolicies that apply to a local pod,
    /// by policy index.
    cluster: HashMap<usize, Arc<IndexedPolicy>>,
}

/// The local endpoint pods and the policies selecting each.
struct Locals<'a> {
    /// In key order; a pod's index here is its local index.
    pods: Vec<&'a Pod>,
    /// Every policy of the cluster, in key order.
    policies: &'a [&'a NetworkPolicy],
    /// Per local pod, the indices in `policies` of those selecting it.
    applying: Vec<Vec<usize>>,
    /// Every ClusterNetworkPolicy, in precedence order.
    cluster_policies: &'a [&'a ClusterNetworkPolicy],
    /// Per local pod, the indices in `cluster_policies` of those whose
    /// subject holds it (ascending, so in precedence order).
    subjects: Vec<Vec<usize>>,
}

impl<'a> Locals<'a> {
    /// `subjects`: per pod of `pods`, the indices in `cluster_policies` of
    /// those whose subject holds it, ascending.
    fn new(
        policies: &'a [&'a NetworkPolicy],
        cluster_policies: &'a [&'a ClusterNetworkPolicy],
        pods: Vec<&'a Pod>,
        subjects: Vec<Vec<usize>>,
    ) -> Self {
        let applying = applying_policies(policies, &pods);
        Locals {
            pods,
            policies,
            applying,
            cluster_policies,
            subjects,
        }
    }

    /// The ClusterNetworkPolicies with rules in direction `d` whose subject
    /// holds local pod `l`, in precedence order.
    fn cluster_rules_of(&self, l: usize, d: Direction) -> Vec<usize> {
        self.subjects[l]
            .iter()
            .copied()
            .filter(|&ci| !self.cluster_policies[ci].rules(d).is_empty())
            .collect()
    }

    /// Whether the policy map decides local pod `l`'s traffic in direction
    /// `d`: NetworkPolicy isolates it, or a ClusterNetworkPolicy with rules
    /// in that direction applies to it.
    fn enforced(&self, l: usize, d: Direction) -> bool {
        self.isolated(l, d) || !self.cluster_rules_of(l, d).is_empty()
    }

    /// Whether a policy selecting local pod `l` isolates it in direction `d`.
    fn isolated(&self, l: usize, d: Direction) -> bool {
        self.applying[l]
            .iter()
            .any(|&pi| self.policies[pi].policy_types.has(d))
    }

    /// The Services whose ClusterIPs get entries: those with addresses and
    /// ports, when some local pod is egress-isolated (none otherwise).
    fn egress_services(&self, cluster: &'a ClusterState) -> Vec<&'a Service> {
        let any_egress_isolated = (0..self.pods.len()).any(|l| self.enforced(l, Direction::Egress));
        if !any_egress_isolated {
            return Vec::new();
        }
        cluster
            .services()
            .filter(|s| !s.cluster_ips.is_empty() && !s.ports.is_empty())
            .collect()
    }

    /// The Service ports whose ClusterIPs egress groups under a
    /// ClusterNetworkPolicy decide by their backends (none without such a group).
    fn tiered_service_ports(
        &self,
        cluster: &ClusterState,
        services: &[&Service],
        ids: &Identities,
    ) -> Vec<ServicePort> {
        let any =
            (0..self.pods.len()).any(|l| !self.cluster_rules_of(l, Direction::Egress).is_empty());
        if !any {
            return Vec::new();
        }
        backed_service_ports(cluster, services, ids)
    }

    /// The enforced local pods grouped by what their entries depend on.
    fn groups(&self) -> Groups {
        let mut groups = Groups::new();
        for (l, pod) in self.pods.iter().enumerate() {
            for d in Direction::ALL {
                let cnps = self.cluster_rules_of(l, d);
                if !self.isolated(l, d) && cnps.is_empty() {
                    continue;
                }
                let pols: Vec<usize> = self.applying[l]
                    .iter()
                    .copied()
                    .filter(|&pi| self.policies[pi].policy_types.has(d))
                    .collect();
                let ports = if d == Direction::Ingress {
                    pod.ports.clone()
                } else {
                    Vec::new()
                };
                groups.entry((d, pols, cnps, ports)).or_default().push(l);
            }
        }
        groups
    }
}

/// The cluster's rejections and the local pods', sorted.
fn all_rejections(cluster: &ClusterState, pod_rejections: Vec<Rejection>) -> Vec<Rejection> {
    let mut rejections: Vec<_> = cluster.rejections().cloned().collect();
    rejections.extend(pod_rejections);
    rejections.sort();
    rejections
}

/// For each local pod, the indices of the policies selecting it (ascending).
/// `policies` is in key order, so a namespace's policies are one range.
fn applying_policies(policies: &[&NetworkPolicy], locals: &[&Pod]) -> Vec<Vec<usize>> {
    locals
        .iter()
        .map(|pod| {
            let ns = pod.namespace.as_str();
            let first = policies.partition_point(|p| p.namespace.as_str() < ns);
            let last = first + policies[first..].partition_point(|p| p.namespace.as_str() == ns);
            (first..last)
                .filter(|&pi| policies[pi].pod_selector.matches(&pod.labels))
                .collect()
        })
        .collect()
}

/// Which remote identities a rule's peers cover.
enum Targets {
    /// Every peer (`from`/`to` empty or omitted).
    Any,
    /// These identities (sorted).
    Set(Vec<IdentityId>),
}

/// What rule expansion needs.
struct RuleContext<'a> {
    policies: &'a [&'a NetworkPolicy],
    network_rules: &'a [Option<Arc<IndexedNetworkPolicy>>],
    cluster_rules: &'a HashMap<usize, Arc<IndexedPolicy>>,
    ids: &'a Identities,
    service_ports: &'a [ServicePort],
    services_fingerprint: u64,
    /// ClusterNetworkPolicy rules' targets, worked out once a compile
    /// (every group under the policy shares them) unless kept from the last.
    cluster_targets: RefCell<RuleTargets>,
}

impl RuleContext<'_> {
    /// The entries of a group in direction `d`: NetworkPolicy's alone, or
    /// the tiered decision when ClusterNetworkPolicies `cnps` apply.
    fn expand(
        &self,
        d: Direction,
        pols: &[usize],
        cnps: &[usize],
        locals: &Locals<'_>,
        pod: &Pod,
        memo: &mut tiered::Memo,
    ) -> Expansion {
        let mut network_policy = self.expand_network_policy(d, pols, pod);
        if cnps.is_empty() {
            return network_policy;
        }
        // What the tiered decision reads (and diffs across compiles).
        lowest_rule_per_entry(&mut network_policy.entries);
        let mut rules = Vec::new();
        let mut out = Expansion {
            atoms: network_policy.atoms.clone(),
            names: network_policy.names.clone(),
            services: (d == Direction::Egress).then_some(self.services_fingerprint),
            ..Expansion::default()
        };
        for &ci in cnps {
            let policy = locals.cluster_policies[ci];
            let Some(indexed) = self.cluster_rules.get(&ci) else {
                continue;
            };
            for indexed in indexed.rules.iter().filter(|r| r.direction == d) {
                let (ri, id, atoms) = (indexed.position, &indexed.id, &indexed.atoms);
                // Indexed from this very policy, so always there.
                let Some(rule) = policy.rules(d).get(ri) else {
                    continue;
                };
                out.atoms.extend(atoms.iter().copied());
                if d == Direction::Egress {
                    for port in rule.ports.iter().flatten() {
                        if let cnp::Port::Named(n) = port {
                            out.names
                                .extend(Protocol::ALL.map(|protocol| (n.clone(), protocol)));
                        }
                    }
                }
                let targets = self.cluster_targets.borrow_mut().of(atoms, self.ids);
                rules.push(TierRule {
                    tier: policy.tier,
                    rule,
                    id: *id,
                    targets,
                    content: indexed.content,
                });
            }
        }
        let group = tiered::Group {
            direction: d,
            rules: &rules,
            network_policy: (!pols.is_empty()).then_some(network_policy.entries.as_slice()),
            pod,
            ids: self.ids,
            services: self.service_ports,
        };
        let entries = group.entries(memo);
        out.entries = entries.allows;
        out.denies = entries.denies;
        out.self_fixes = entries.self_fixes;
        out
    }

    /// The allow entries of `pols`' rules in direction `d` for a local pod
    /// (`pod` resolves ingress named ports).
    fn expand_network_policy(&self, d: Direction, pols: &[usize], pod: &Pod) -> Expansion {
        let mut out = Expansion::default();
        for &pi in pols {
            let Some(indexed) = self.network_rules.get(pi).and_then(Option::as_ref) else {
                continue;
            };
            let rules = self.policies[pi].allowing_rules(d);
            for (rule, indexed) in rules.iter().zip(indexed.rules(d)) {
                let (id, atoms) = (indexed.id, &indexed.atoms);
                out.atoms.extend(atoms.iter().copied());
                if d == Direction::Egress {
                    for spec in rule.ports.iter().flatten() {
                        if let Some(PortRef::Named(n)) = &spec.port {
                            out.names.insert((n.clone(), spec.protocol));
                        }
                    }
                }
                self.expand_rule(d, rule, atoms, id, pod, &mut out.entries);
            }
        }
        out
    }

    fn expand_rule(
        &self,
        d: Direction,
        rule: &Rule,
        atoms: &[AtomId],
        id: RuleId,
        pod: &Pod,
        out: &mut Vec<Entry>,
    ) {
        let targets = match &rule.peers {
            None => Targets::Any,
            Some(_) => {
                let mut v: Vec<IdentityId> = atoms
                    .iter()
                    .filter_map(|a| self.ids.by_atom.get(a))
                    .flatten()
                    .copied()
                    .collect();
                v.sort_unstable();
                v.dedup();
                Targets::Set(v)
            }
        };
        let emit = |out: &mut Vec<Entry>, l4: L4Match| match &targets {
            Targets::Any => out.push((IdentityId::ANY, l4, id)),
            Targets::Set(v) => out.extend(v.iter().map(|i| (*i, l4, id))),
        };
        let Some(ports) = &rule.ports else {
            emit(out, L4Match::Any);
            return;
        };
        for spec in ports {
            let protocol = spec.protocol.number();
            match &spec.port {
                None => emit(out, L4Match::Protocol(protocol)),
                Some(PortRef::Range { first, last }) => emit(
                    out,
                    L4Match::Ports {
                        protocol,
                        first: *first,
                        last: *last,
                    },
                ),
                Some(PortRef::Named(name)) if d == Direction::Ingress => {
                    if let Some(n) = pod.named_port(name, spec.protocol) {
                        emit(
                            out,
                            L4Match::Ports {
                                protocol,
                                first: n,
                                last: n,
                            },
                        );
                    }
                }
                Some(PortRef::Named(name)) => {
                    // Egress: resolved per peer identity (pods carry their numbers).
                    let Some(holders) = self.ids.named.get(&(name.clone(), spec.protocol)) else {
                        continue;
                    };
                    for (identity, n) in holders {
                        let covered = match &targets {
                            Targets::Any => true,
                            Targets::Set(v) => v.binary_search(identity).is_ok(),
                        };
                        if covered {
                            out.push((
                                *identity,
                                L4Match::Ports {
                                    protocol,
                                    first: *n,
                                    last: *n,
                                },
                                id,
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Every ClusterIP's service ports with ready backends: the ClusterIP's
/// identity and the backends' addresses, identities and target ports.
fn backed_service_ports(
    cluster: &ClusterState,
    services: &[&Service],
    ids: &Identities,
) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for svc in services {
        let Some(ips) = ids
            .service_ips
            .get(&(svc.namespace.clone(), svc.name.clone()))
        else {
            continue;
        };
        for sp in &svc.ports {
            for (cip, sid) in ips {
                let backends: Vec<(IpAddr, IdentityId, u16)> = cluster
                    .service_backends(svc, sp, *cip)
                    .into_iter()
                    .map(|(addr, port)| (addr, ipcache_lookup(&ids.ipcache, addr), port))
                    .collect();
                if !backends.is_empty() {
                    out.push(ServicePort {
                        identity: *sid,
                        protocol: sp.protocol.number(),
                        port: sp.port,
                        backends,
                    });
                }
            }
        }
    }
    out
}

/// Service entries for one egress group with expansion `entries`: for each
/// ClusterIP and service port with ready backends, the identity, L4, rule
/// credited, and the backends the group's rules do not allow (an endpoint gets
/// the entry only if those are its own addresses).
fn service_entries(
    cluster: &ClusterState,
    services: &[&Service],
    ids: &Identities,
    entries: &[Entry],
) -> Vec<ServiceEntry> {
    let mut by_identity: HashMap<IdentityId, Vec<(L4Match, RuleId)>> = HashMap::new();
    for (i, l4, r) in entries {
        by_identity.entry(*i).or_default().push((*l4, *r));
    }
    let allows = |identity: IdentityId, protocol: u8, port: u16| -> Option<RuleId> {
        [identity, IdentityId::ANY]
            .iter()
            .filter_map(|i| by_identity.get(i))
            .flatten()
            .filter(|(l4, _)| l4_matches(*l4, protocol, port))
            .map(|(_, r)| *r)
            .min()
    };
    let mut out = Vec::new();
    for sp in backed_service_ports(cluster, services, ids) {
        let mut denied = Vec::new();
        let mut credited: Option<RuleId> = None;
        for (addr, identity, port) in sp.backends {
            match allows(identity, sp.protocol, port) {
                Some(r) => credited = Some(credited.map_or(r, |c| c.min(r))),
                None => denied.push(addr),
            }
        }
        let l4 = L4Match::Ports {
            protocol: sp.protocol,
            first: sp.port,
            last: sp.port,
        };
        out.push((sp.identity, l4, credited.unwrap_or(RuleId::NONE), denied));
    }
    out
}

#[cfg(test)]
impl Compiler {
    /// Makes the next compile start from nothing but the ids.
    pub(crate) fn forget_history(&mut self) {
        self.remote = IdentityCache::default();
        self.groups.clear();
        self.stamps.clear();
        self.origins = Origins::default();
        self.subjects = Subjects::default();
        self.mark = None;
    }

    /// The atoms an allocated identity stands for.
    pub(crate) fn identity_atoms(&self, id: IdentityId) -> Option<BTreeSet<Atom>> {
        self.identities
            .key_of(id.0)?
            .iter()
            .map(|a| self.atoms.key_of(a.0).cloned())
            .collect()
    }
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "compile_cnp_tests.rs"]
mod cnp_tests;
