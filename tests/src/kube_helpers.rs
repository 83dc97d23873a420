//! Applying YAML documents to a control plane the way `kubectl apply --server-side` does.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::wait::{await_condition, conditions};

/// The field manager tests apply with.
pub const TEST_MANAGER: &str = "contact-tests";

/// Errors of applying YAML.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The YAML did not parse.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// A document lacks apiVersion/kind/name.
    #[error("document {index} is not a Kubernetes object: {reason}")]
    NotAnObject {
        /// Position of the document in the stream.
        index: usize,
        /// What is missing.
        reason: String,
    },
    /// The apiserver does not know the kind.
    #[error("the apiserver does not serve {0}")]
    UnknownKind(String),
    /// The apiserver refused the request.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// Waiting for a condition failed.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// Parses a YAML stream into typed documents, skipping empty ones; errors name the document.
fn parse_stream<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<Vec<T>, ApplyError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| ApplyError::Yaml(e.to_string()))?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .enumerate()
        .map(|(index, d)| {
            serde_json::from_value(d).map_err(|e| ApplyError::NotAnObject {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Parses a YAML stream into objects, skipping empty documents.
pub fn parse_documents(yaml: &str) -> Result<Vec<DynamicObject>, ApplyError> {
    parse_stream(yaml)
}

/// Installs CRDs from YAML and waits until each is established.
pub async fn install_crds(
    client: &Client,
    yaml: &str,
) -> Result<Vec<CustomResourceDefinition>, ApplyError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut installed = Vec::new();
    for crd in parse_stream::<CustomResourceDefinition>(yaml)? {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| ApplyError::Timeout(format!("CRD {name} to be established")))?
        .map_err(|e| ApplyError::Timeout(format!("CRD {name}: {e}")))?;
        installed.push(applied);
    }
    Ok(installed)
}

/// Creates a namespace (tests start from an empty control plane).
pub async fn create_namespace(client: &Client, name: &str) -> Result<(), kube::Error> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map(|_| ())
}

/// Applies every object of a YAML stream with server-side apply, in order. Namespaced objects
/// without a namespace go to `default_namespace`. Returns the objects as the apiserver stored them.
pub async fn apply_yaml(
    client: &Client,
    yaml: &str,
    default_namespace: &str,
) -> Result<Vec<DynamicObject>, ApplyError> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut applied = Vec::new();
    for obj in parse_documents(yaml)? {
        let (ar, caps) = resolve(&discovery, &obj)?;
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or_else(|| ApplyError::NotAnObject {
                index: applied.len(),
                reason: "metadata.name is missing".into(),
            })?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &ar),
            Scope::Namespaced => {
                let ns = obj
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| default_namespace.to_owned());
                Api::namespaced_with(client.clone(), &ns, &ar)
            }
        };
        let stored = api
            .patch(
                &name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await?;
        applied.push(stored);
    }
    Ok(applied)
}

fn resolve(
    discovery: &Discovery,
    obj: &DynamicObject,
) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
    let types = obj.types.as_ref().ok_or_else(|| ApplyError::NotAnObject {
        index: 0,
        reason: "apiVersion/kind are missing".into(),
    })?;
    let gvk = GroupVersionKind::try_from(types).map_err(|e| ApplyError::NotAnObject {
        index: 0,
        reason: e.to_string(),
    })?;
    discovery
        .resolve_gvk(&gvk)
        .ok_or_else(|| ApplyError::UnknownKind(format!("{gvk:?}")))
}
