//! The naive baseline: what a deploy tool does without vztmpld. For each node and template it lists the node's
//! vztmpl storages, then the content of each, one request after another on a keep-alive connection; on a miss
//! it downloads the template to the node's `local` storage (`pveam download local ...`) and waits for the task.

use std::time::{Duration, Instant};

use serde_json::Value;
use vztmpld::template::{TemplateName, TemplateSpec};

use crate::sims::{Cluster, SPECS};

/// One cluster as a deploy tool sees it: one endpoint, one keep-alive client.
pub struct Scanner {
    client: reqwest::Client,
    endpoint: String,
    auth: String,
    nodes: Vec<String>,
    specs: Vec<TemplateSpec>,
    pub requests: u64,
}

impl Scanner {
    pub fn new(sim: &Cluster) -> Self {
        let tls = pve_sim::tls::client_config_trusting(&sim.ca_der()).expect("tls");
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .expect("client");
        Self {
            client,
            endpoint: sim.endpoint.clone(),
            auth: sim.auth_header(),
            nodes: sim.nodes.clone(),
            specs: SPECS.iter().map(|s| TemplateSpec::parse(s).expect("spec")).collect(),
            requests: 0,
        }
    }

    async fn get(&mut self, path: &str) -> Value {
        self.requests += 1;
        let r = self
            .client
            .get(format!("{}/api2/json{path}", self.endpoint))
            .header("Authorization", &self.auth)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        r.json::<Value>().await.expect("json")["data"].take()
    }

    /// The deploy-time question for one node and spec: the matching volid, if any.
    async fn find(&mut self, node: &str, spec: usize) -> Option<String> {
        let storages = self.get(&format!("/nodes/{node}/storage?content=vztmpl&enabled=1")).await;
        let ids: Vec<String> =
            storages.as_array().into_iter().flatten().filter_map(|s| s["storage"].as_str().map(String::from)).collect();
        let mut found = None;
        for id in ids {
            let content = self.get(&format!("/nodes/{node}/storage/{id}/content?content=vztmpl")).await;
            for v in content.as_array().into_iter().flatten() {
                let Some(volid) = v["volid"].as_str() else { continue };
                let file = volid.split_once(":vztmpl/").map_or("", |(_, f)| f);
                if TemplateName::parse(file).is_some_and(|n| self.specs[spec].matches(&n, "amd64")) {
                    found = Some(volid.to_string());
                }
            }
        }
        found
    }

    /// Every node × spec, sequentially: (time taken, how many were found).
    pub async fn scan(&mut self) -> (Duration, usize) {
        let started = Instant::now();
        let mut found = 0;
        for node in self.nodes.clone() {
            for spec in 0..self.specs.len() {
                found += usize::from(self.find(&node, spec).await.is_some());
            }
        }
        (started.elapsed(), found)
    }

    /// The cold start without vztmpld: every node downloads what it misses to its own `local`. Returns the
    /// number of downloads it started.
    pub async fn cold_start(&mut self) -> u64 {
        let mut started = 0;
        for node in self.nodes.clone() {
            let index = self.get(&format!("/nodes/{node}/aplinfo")).await;
            for spec in 0..self.specs.len() {
                if self.find(&node, spec).await.is_some() {
                    continue;
                }
                let newest = index
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["template"].as_str())
                    .filter(|t| TemplateName::parse(t).is_some_and(|n| self.specs[spec].matches(&n, "amd64")))
                    .max_by(|a, b| {
                        let (a, b) = (TemplateName::parse(a), TemplateName::parse(b));
                        match (a, b) {
                            (Some(a), Some(b)) => vztmpld::template::compare_recency(&a, &b),
                            _ => std::cmp::Ordering::Equal,
                        }
                    })
                    .map(String::from)
                    .expect("spec in the index");
                let upid =
                    self.post(&format!("/nodes/{node}/aplinfo"), &[("storage", "local"), ("template", &newest)]).await;
                started += 1;
                self.wait(&node, &upid).await;
            }
        }
        started
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> String {
        self.requests += 1;
        let r = self
            .client
            .post(format!("{}/api2/json{path}", self.endpoint))
            .header("Authorization", &self.auth)
            .form(form)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        r.json::<Value>().await.expect("json")["data"].as_str().expect("UPID").to_string()
    }

    async fn wait(&mut self, node: &str, upid: &str) {
        let encoded = pve_sim::testing::encode(upid);
        for _ in 0..600 {
            let status = self.get(&format!("/nodes/{node}/tasks/{encoded}/status")).await;
            if status["status"] == "stopped" {
                assert_eq!(status["exitstatus"], "OK", "baseline download failed");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("baseline download {upid} did not finish in 60 s");
    }
}
