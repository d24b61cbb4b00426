//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use cloudkit_aap_sim::{SimHandle, Simulator, SimulatorBuilder};
use serde_json::Value;

pub const TOKEN: &str = "s3cret-token";

/// Serves `builder` (with [`TOKEN`] accepted) on a free loopback port.
pub async fn spawn(builder: SimulatorBuilder) -> SimHandle {
    builder
        .token(TOKEN)
        .seed(42)
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub async fn spawn_default(
    builder: impl FnOnce(SimulatorBuilder) -> SimulatorBuilder,
) -> SimHandle {
    spawn(builder(Simulator::builder())).await
}

/// A small HTTP client with the token.
#[derive(Clone, Debug)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Client {
    pub fn new(handle: &SimHandle) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: handle.base_url().to_owned(),
            token: Some(TOKEN.to_owned()),
        }
    }

    pub fn without_token(&self) -> Self {
        Self {
            token: None,
            ..self.clone()
        }
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Result<Answer> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            text,
            json,
        })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None).await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body))
            .await
            .unwrap()
    }
}

/// The operator's launch body for a CI.
pub fn operator_launch(name: &str, key: &str, template_parameters: Option<&str>) -> Value {
    let mut spec = serde_json::json!({"templateID": "test_template"});
    if let Some(p) = template_parameters {
        spec["templateParameters"] = Value::String(p.to_owned());
    }
    serde_json::json!({
        "extra_vars": {
            "ansible_eda": {"event": {"payload": {
                "apiVersion": "cloudkit.openshift.io/v1alpha1",
                "kind": "ComputeInstance",
                "metadata": {"name": name, "namespace": "ns1"},
                "spec": spec,
                "status": {"desiredConfigVersion": "c15fb6a31521d9c3"}
            }}},
            "cloudkit_launch_key": key,
        }
    })
}
