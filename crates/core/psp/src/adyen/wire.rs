//! Adyen's standard notification webhook: `{"live": "false", "notificationItems": [{"NotificationRequestItem":
//! {...}}]}`. Fields Tally does not read are ignored, since Adyen adds attributes without notice.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::clean;

#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    #[serde(default)]
    pub live: Option<String>,
    #[serde(rename = "notificationItems")]
    pub items: Vec<ItemWrapper>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ItemWrapper {
    #[serde(rename = "NotificationRequestItem")]
    pub item: NotificationRequestItem,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRequestItem {
    #[serde(default)]
    pub additional_data: BTreeMap<String, Value>,
    #[serde(default)]
    pub amount: Option<WireAmount>,
    pub event_code: String,
    #[serde(default)]
    pub event_date: Option<String>,
    pub merchant_account_code: String,
    #[serde(default)]
    pub merchant_reference: Option<String>,
    #[serde(default)]
    pub original_reference: Option<String>,
    #[serde(default)]
    pub payment_method: Option<String>,
    pub psp_reference: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// The literal `"true"` or `"false"`.
    pub success: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireAmount {
    #[serde(default)]
    pub currency: Option<String>,
    /// A JSON number normally; Adyen's own tests also send it as a string.
    #[serde(default)]
    pub value: Option<Value>,
}

impl NotificationRequestItem {
    pub fn additional(&self, key: &str) -> Option<&str> {
        self.additional_data.get(key).and_then(Value::as_str)
    }

    pub fn success(&self) -> bool {
        self.success == "true"
    }
}

/// The shapes of body Adyen sends to a webhook endpoint.
pub enum Body {
    /// The standard notification: a batch of items.
    Standard(Notification),
    /// A bare `NotificationRequestItem` (as Adyen's own HMAC test fixture is laid out).
    BareItem(Box<NotificationRequestItem>),
    /// A platform, management or terminal webhook: `{"type": …}` or `{"SaleToPOIRequest": …}`. Not a payment
    /// notification; carried as its type name.
    Other(String),
}

/// Classifies and parses a body.
pub fn parse(body: &[u8]) -> Result<Body, (bool, String)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| (false, clean(&e.to_string())))?;
    let obj = value.as_object().ok_or((true, "body is not a JSON object".to_owned()))?;
    let data_err = |e: serde_json::Error| (true, clean(&e.to_string()));
    if obj.contains_key("notificationItems") {
        return Notification::deserialize(&value).map(Body::Standard).map_err(data_err);
    }
    if obj.contains_key("eventCode") && obj.contains_key("pspReference") {
        return NotificationRequestItem::deserialize(&value).map(|i| Body::BareItem(Box::new(i))).map_err(data_err);
    }
    if let Some(t) = obj.get("type").and_then(Value::as_str) {
        return Ok(Body::Other(clean(t)));
    }
    if let Some(req) = obj.get("SaleToPOIRequest").and_then(Value::as_object) {
        let kind = req.keys().find(|k| *k != "MessageHeader").map(|k| clean(k)).unwrap_or_else(|| "unknown".into());
        return Ok(Body::Other(format!("SaleToPOIRequest.{kind}")));
    }
    Err((true, "neither a standard notification (notificationItems) nor a known Adyen webhook shape".into()))
}
