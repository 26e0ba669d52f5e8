//! `reshape` — a JSON transform, the second CPU-bound workload of the benchmarks.
//!
//! Each item is an order, `{"id", "customer": {"name", "email", "country"}, "currency",
//! "placed_at", "lines": [{"sku", "qty", "unit_price", "tags"}]}`; the handler returns
//! one summary per order (its total, line count, largest line, the tags seen, the
//! customer's e-mail domain and a normalized name), which the host writes to the job's
//! results. The kind of work an ETL step does: parse, reshape, compute, serialize.
//!
//! The transform is plain Rust in [`summarize`], so the same code also builds natively.
//!
//! Build: `cargo build --target wasm32-wasip1 --release -p reshape`
//! Run:   `wasmbatch run job.json --plugin reshape.wasm --results out.jsonl`

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use wasmbatch_guest::{Context, Result};

/// One order line.
#[derive(Debug, Deserialize)]
pub struct Line {
    /// Stock-keeping unit.
    pub sku: String,
    /// Quantity ordered.
    pub qty: u32,
    /// Price of one unit, in the order's currency.
    pub unit_price: f64,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Who placed the order.
#[derive(Debug, Deserialize)]
pub struct Customer {
    /// Full name, as typed.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// ISO country code.
    pub country: String,
}

/// One input order.
#[derive(Debug, Deserialize)]
pub struct Order {
    /// The order's ID.
    pub id: String,
    /// Who placed it.
    pub customer: Customer,
    /// ISO currency code, any case.
    pub currency: String,
    /// When it was placed (RFC 3339), carried through.
    pub placed_at: String,
    /// Its lines.
    pub lines: Vec<Line>,
}

/// What [`summarize`] makes of one order.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    /// The order's ID.
    pub id: String,
    /// The customer's name, trimmed, inner white space collapsed, each word capitalized.
    pub customer: String,
    /// The e-mail address's domain, lower case.
    pub email_domain: String,
    /// The country code, upper case.
    pub country: String,
    /// The currency code, upper case.
    pub currency: String,
    /// When the order was placed.
    pub placed_at: String,
    /// Lines in the order.
    pub lines: usize,
    /// Units over all lines.
    pub units: u64,
    /// Sum of quantity × unit price, rounded to cents.
    pub total: f64,
    /// The SKU of the line with the largest amount.
    pub largest_line: Option<String>,
    /// Every tag of every line, lower case, sorted, once each.
    pub tags: Vec<String>,
}

fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.extend(chars.flat_map(char::to_lowercase));
        }
    }
    out
}

/// Summarizes one order.
pub fn summarize(order: &Order) -> Summary {
    let mut total = 0.0;
    let mut units = 0u64;
    let mut largest: Option<(&str, f64)> = None;
    let mut tags = BTreeSet::new();
    for line in &order.lines {
        let amount = f64::from(line.qty) * line.unit_price;
        total += amount;
        units += u64::from(line.qty);
        if largest.is_none_or(|(_, a)| amount > a) {
            largest = Some((&line.sku, amount));
        }
        tags.extend(line.tags.iter().map(|t| t.trim().to_lowercase()));
    }
    let email_domain = order.customer.email.rsplit_once('@').map(|(_, d)| d.to_lowercase()).unwrap_or_default();
    Summary {
        id: order.id.clone(),
        customer: title_case(&order.customer.name),
        email_domain,
        country: order.customer.country.to_uppercase(),
        currency: order.currency.to_uppercase(),
        placed_at: order.placed_at.clone(),
        lines: order.lines.len(),
        units,
        total: (total * 100.0).round() / 100.0,
        largest_line: largest.map(|(sku, _)| sku.to_string()),
        tags: tags.into_iter().collect(),
    }
}

#[wasmbatch_guest::handler]
fn handle(_ctx: &Context, orders: Vec<Order>) -> Result<Vec<Summary>> {
    Ok(orders.iter().map(summarize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_summarized() {
        let order: Order = serde_json::from_str(
            r#"{"id":"o-1","customer":{"name":"  ada   LOVELACE ","email":"Ada@Example.ORG","country":"gb"},
                "currency":"gbp","placed_at":"2026-11-30T01:00:00Z","lines":[
                {"sku":"A","qty":2,"unit_price":1.25,"tags":["Gift"," sale"]},
                {"sku":"B","qty":1,"unit_price":9.99,"tags":["sale"]}]}"#,
        )
        .unwrap();
        let s = summarize(&order);
        assert_eq!(s.customer, "Ada Lovelace");
        assert_eq!(s.email_domain, "example.org");
        assert_eq!((s.country.as_str(), s.currency.as_str()), ("GB", "GBP"));
        assert_eq!((s.lines, s.units, s.total), (2, 3, 12.49));
        assert_eq!(s.largest_line.as_deref(), Some("B"));
        assert_eq!(s.tags, ["gift", "sale"]);
    }

    #[test]
    fn an_order_without_lines_has_no_largest_line() {
        let order: Order = serde_json::from_str(
            r#"{"id":"o-2","customer":{"name":"x","email":"nobody","country":"fr"},"currency":"eur",
                "placed_at":"t","lines":[]}"#,
        )
        .unwrap();
        let s = summarize(&order);
        assert_eq!((s.total, s.largest_line, s.email_domain.as_str()), (0.0, None, ""));
    }
}
