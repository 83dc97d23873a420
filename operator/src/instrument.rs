//! Counting the requests a client sends, by HTTP method: the evidence behind "an idle reconcile
//! writes nothing" (tests) and "API requests per tenant" (the benchmark). A tower layer on the
//! real client, not a mock: requests still go to the API server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Shared tallies of the requests seen so far.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    inner: Arc<Mutex<Tally>>,
}

#[derive(Debug, Default)]
struct Tally {
    by_method: BTreeMap<String, u64>,
    writes: Vec<String>,
}

impl RequestCounter {
    fn record(&self, method: &http::Method, uri: &http::Uri) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *t.by_method.entry(method.to_string()).or_default() += 1;
        if method != http::Method::GET {
            t.writes.push(format!("{method} {}", uri.path()));
        }
    }

    /// Requests by method since the last reset.
    pub fn by_method(&self) -> BTreeMap<String, u64> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_method
            .clone()
    }

    /// All requests since the last reset.
    pub fn total(&self) -> u64 {
        self.by_method().values().sum()
    }

    /// Non-GET requests (writes) since the last reset, as `METHOD path`.
    pub fn writes(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writes
            .clone()
    }

    /// Forgets everything counted so far.
    pub fn reset(&self) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *t = Tally::default();
    }

    /// A tower layer that records into this counter.
    pub fn layer(&self) -> CountLayer {
        CountLayer(self.clone())
    }
}

/// Tower layer that counts requests.
#[derive(Debug, Clone)]
pub struct CountLayer(RequestCounter);

impl<S> Layer<S> for CountLayer {
    type Service = CountService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountService {
            inner,
            counter: self.0.clone(),
        }
    }
}

/// Tower service that counts requests and passes them on.
#[derive(Debug, Clone)]
pub struct CountService<S> {
    inner: S,
    counter: RequestCounter,
}

impl<S, B> Service<http::Request<B>> for CountService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.counter.record(req.method(), req.uri());
        self.inner.call(req)
    }
}

/// A client for `config` whose requests are counted by the returned counter.
pub fn counting_client(
    config: kube::Config,
) -> Result<(kube::Client, RequestCounter), kube::Error> {
    let counter = RequestCounter::default();
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&counter.layer())
        .build();
    Ok((client, counter))
}
