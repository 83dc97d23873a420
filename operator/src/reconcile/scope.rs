//! Where the operator watches: every namespace (one cluster-wide watch per kind), or only the
//! namespaces it is limited to (`--watch-namespaces`): then one watch per namespace and kind,
//! which a Role in each of them allows, so the operator needs no cluster-wide right at all (the
//! chart's namespaced mode).
//!
//! A reflector's store takes one watcher's events, and a watcher's (re)list replaces the whole
//! store at its `InitDone`. The per-namespace watchers are merged so the store sees one watcher:
//! one `Init` … `InitDone` once every namespace has listed, and afterwards a namespace's relist
//! (after a watch desync) as `Apply` of what it lists and `Delete` of what the store held in that
//! namespace but the relist no longer has: the other namespaces' objects stay.

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt::Debug;

/// A watcher's events.
pub(crate) type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// The watch events of kind `K` in `namespaces` (every namespace when empty), with the usual
/// backoff; `store` is the store they will be reflected into (read to tell what a namespace's
/// relist dropped).
pub(crate) fn watch<K>(
    client: &Client,
    namespaces: &[String],
    config: watcher::Config,
    store: Store<K>,
) -> Events<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    if namespaces.is_empty() {
        return watcher(Api::<K>::all(client.clone()), config)
            .default_backoff()
            .boxed();
    }
    let streams = namespaces.iter().enumerate().map(|(i, ns)| {
        watcher(Api::<K>::namespaced(client.clone(), ns), config.clone())
            .default_backoff()
            .map(move |e| (i, e))
            .boxed()
    });
    let mut merge = Merge::new(namespaces.to_vec(), store);
    futures::stream::select_all(streams)
        .flat_map(move |(i, e)| futures::stream::iter(merge.step(i, e)))
        .boxed()
}

/// The state of merging per-namespace watchers into one.
struct Merge<K: Resource<DynamicType = ()> + Clone + 'static> {
    namespaces: Vec<String>,
    store: Store<K>,
    /// Per namespace: the objects of its (re)list in progress (`None`: not relisting).
    listing: Vec<Option<HashSet<ObjectRef<K>>>>,
    /// Per namespace: whether its first list is done.
    listed: Vec<bool>,
    /// Whether the merged `Init` went out.
    started: bool,
}

impl<K> Merge<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    fn new(namespaces: Vec<String>, store: Store<K>) -> Self {
        let n = namespaces.len();
        Self {
            namespaces,
            store,
            listing: vec![None; n],
            listed: vec![false; n],
            started: false,
        }
    }

    /// Whether every namespace has listed once (the merged initial list is over).
    fn initial_done(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    /// The merged events for event `e` of namespace `i`.
    fn step(
        &mut self,
        i: usize,
        e: Result<Event<K>, watcher::Error>,
    ) -> Vec<Result<Event<K>, watcher::Error>> {
        let e = match e {
            Ok(e) => e,
            Err(err) => return vec![Err(err)],
        };
        let initial = !self.initial_done();
        match e {
            Event::Apply(o) => vec![Ok(Event::Apply(o))],
            Event::Delete(o) => vec![Ok(Event::Delete(o))],
            Event::Init => {
                self.listing[i] = Some(HashSet::new());
                if initial && !self.started {
                    self.started = true;
                    vec![Ok(Event::Init)]
                } else {
                    Vec::new()
                }
            }
            Event::InitApply(o) => {
                if let Some(seen) = self.listing[i].as_mut() {
                    seen.insert(ObjectRef::from_obj(&o));
                }
                vec![Ok(if initial {
                    Event::InitApply(o)
                } else {
                    Event::Apply(o)
                })]
            }
            Event::InitDone => {
                let seen = self.listing[i].take().unwrap_or_default();
                if initial {
                    self.listed[i] = true;
                    return if self.initial_done() {
                        vec![Ok(Event::InitDone)]
                    } else {
                        Vec::new()
                    };
                }
                // A relist of one namespace: what the store held there and the relist no longer
                // has was deleted meanwhile.
                let ns = &self.namespaces[i];
                self.store
                    .state()
                    .into_iter()
                    .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
                    .filter(|o| !seen.contains(&ObjectRef::from_obj(&**o)))
                    .map(|o| Ok(Event::Delete((*o).clone())))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn one_initial_list_then_relists_of_one_namespace_keep_the_others() {
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        let mut m = Merge::new(vec!["a".into(), "b".into()], reader.clone());
        let mut feed = |m: &mut Merge<ConfigMap>, i, e| {
            let out = m.step(i, Ok(e));
            for e in out.iter().flatten() {
                writer.apply_watcher_event(e);
            }
            out.len()
        };
        assert_eq!(feed(&mut m, 0, Event::Init), 1);
        assert_eq!(feed(&mut m, 1, Event::Init), 0, "one Init for all");
        feed(&mut m, 0, Event::InitApply(cm("a", "x")));
        feed(&mut m, 1, Event::InitApply(cm("b", "y")));
        assert_eq!(feed(&mut m, 0, Event::InitDone), 0, "b has not listed yet");
        assert_eq!(feed(&mut m, 1, Event::InitDone), 1);
        assert_eq!(reader.state().len(), 2);

        // b relists after a desync; y was deleted meanwhile, z created.
        assert_eq!(feed(&mut m, 1, Event::Init), 0);
        feed(&mut m, 1, Event::InitApply(cm("b", "z")));
        assert_eq!(feed(&mut m, 1, Event::InitDone), 1, "one Delete: y");
        let mut names: Vec<_> = reader.state().iter().map(|o| o.name_any()).collect();
        names.sort();
        assert_eq!(names, vec!["x", "z"], "a's objects stay");
    }
}
