//! The listing parameters every list route takes, as RabbitMQ's
//! management plugin reads them: `page`, `page_size`, `name` and
//! `use_regex`, `sort` and `sort_reverse`, `columns`, `disable_stats`.
//!
//! A list is asked for as *keys* in the default order (a vhost's queue
//! names, say) plus a way to render one key into its JSON object. With the
//! default order and no `sort` on another field, only the keys of the
//! requested page are rendered, so a page of a vhost with 100,000 queues
//! costs a page, not 100,000 queue locks; sorting on a field has to render
//! everything first. The name filter, as in RabbitMQ, applies only to paged
//! requests.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use regex::RegexBuilder;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ApiError;

/// RabbitMQ's `?MAX_PAGE_SIZE`.
const MAX_PAGE_SIZE: usize = 500;

/// The query string of a list route.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: Option<String>,
    sort: Option<String>,
    sort_reverse: Option<String>,
    columns: Option<String>,
    disable_stats: Option<String>,
    /// With `disable_stats`: keep the message counts anyway.
    enable_queue_totals: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref() == Some("true")
}

/// The parameters, checked.
#[derive(Debug)]
pub struct Listing {
    page: Option<(usize, usize)>,
    name: Option<NameFilter>,
    sort: Option<Vec<String>>,
    reverse: bool,
    columns: Option<Vec<Vec<String>>>,
    pub disable_stats: bool,
    pub queue_totals: bool,
}

#[derive(Debug)]
enum NameFilter {
    Substring(String),
    Regex(regex::Regex),
}

impl NameFilter {
    fn matches(&self, name: &str) -> bool {
        match self {
            NameFilter::Substring(s) => name.to_lowercase().contains(s.as_str()),
            NameFilter::Regex(r) => r.is_match(name),
        }
    }
}

impl ListParams {
    pub fn check(&self) -> Result<Listing, ApiError> {
        let page = match &self.page {
            None => None,
            Some(p) => {
                let size = self.page_size.as_deref().unwrap_or("100");
                let (page, size) = match (p.parse::<usize>(), size.parse::<usize>()) {
                    (Ok(page), Ok(size)) => (page, size),
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "Invalid pagination parameters: page number {p}, page size {size}"
                        )));
                    }
                };
                if page < 1 || !(1..=MAX_PAGE_SIZE).contains(&size) {
                    return Err(ApiError::Pagination(format!(
                        "Invalid pagination parameters: page number {page}, page size {size}"
                    )));
                }
                Some((page, size))
            }
        };
        let name = match (&page, &self.name) {
            (Some(_), Some(n)) if !n.is_empty() => Some(if truthy(&self.use_regex) {
                NameFilter::Regex(
                    RegexBuilder::new(n)
                        .case_insensitive(true)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| ApiError::BadRequest(format!("invalid regex: {e}")))?,
                )
            } else {
                NameFilter::Substring(n.to_lowercase())
            }),
            _ => None,
        };
        let split = |s: &str| -> Vec<String> { s.split('.').map(str::to_string).collect() };
        Ok(Listing {
            page,
            name,
            sort: self.sort.as_deref().filter(|s| !s.is_empty()).map(split),
            reverse: truthy(&self.sort_reverse),
            columns: self.columns.as_deref().filter(|c| !c.is_empty()).map(|c| {
                c.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| split(s.trim()))
                    .collect()
            }),
            disable_stats: truthy(&self.disable_stats),
            queue_totals: truthy(&self.enable_queue_totals),
        })
    }
}

impl Listing {
    /// Whether a sort on `sort` leaves the default order (`name`, or the
    /// first of the default keys).
    fn keeps_default_order(&self, default_sort: &str) -> bool {
        match &self.sort {
            None => !self.reverse,
            Some(path) => !self.reverse && path.len() == 1 && path[0] == default_sort,
        }
    }

    /// List `keys` (in the default order, which sorts by `default_sort`),
    /// rendering with `render` only what the response needs. `name_of`
    /// gives the name the `name` filter matches. A key that no longer
    /// renders (deleted meanwhile) is skipped.
    pub fn list<K>(
        &self,
        keys: Vec<K>,
        default_sort: &str,
        name_of: impl Fn(&K) -> &str,
        render: impl Fn(&K) -> Option<Value>,
    ) -> Result<Response, ApiError> {
        self.list_by(keys, default_sort, name_of, |_, _| None, render)
    }

    /// As [`Listing::list`], with `sort_value` giving a key's value at a
    /// sort path when it can without rendering the whole object (a queue's
    /// depth is one lock, its JSON object many allocations); where it
    /// gives `None`, the object is rendered to find the value. Only the
    /// page is rendered for the answer either way.
    pub fn list_by<K>(
        &self,
        keys: Vec<K>,
        default_sort: &str,
        name_of: impl Fn(&K) -> &str,
        sort_value: impl Fn(&K, &[String]) -> Option<Value>,
        render: impl Fn(&K) -> Option<Value>,
    ) -> Result<Response, ApiError> {
        let total = keys.len();
        let keys: Vec<K> = match &self.name {
            Some(f) => keys.into_iter().filter(|k| f.matches(name_of(k))).collect(),
            None => keys,
        };
        let filtered = keys.len();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        if !self.keeps_default_order(default_sort) {
            if let Some(path) = &self.sort {
                let values: Vec<Option<Value>> = keys
                    .iter()
                    .map(|k| {
                        sort_value(k, path)
                            .or_else(|| render(k).and_then(|v| pick(&v, path).cloned()))
                    })
                    .collect();
                // Stable: ties keep the default order.
                order.sort_by(|&a, &b| compare(values[a].as_ref(), values[b].as_ref()));
            }
            if self.reverse {
                order.reverse();
            }
        }
        let (skip, take) = self.window(filtered)?;
        let items: Vec<Value> = order
            .into_iter()
            .skip(skip)
            .take(take)
            .filter_map(|i| render(&keys[i]))
            .collect();
        Ok(self.respond(items, total, filtered))
    }

    /// Which items of `filtered` a page covers.
    fn window(&self, filtered: usize) -> Result<(usize, usize), ApiError> {
        let Some((page, size)) = self.page else {
            return Ok((0, usize::MAX));
        };
        let pages = filtered.div_ceil(size);
        if page > pages.max(1) {
            return Err(ApiError::PageOutOfRange(format!(
                "Page out of range, page: {page} page size: {size}, len: {filtered}"
            )));
        }
        Ok(((page - 1) * size, size))
    }

    fn respond(&self, items: Vec<Value>, total: usize, filtered: usize) -> Response {
        let items: Vec<Value> = match &self.columns {
            Some(cols) => items.into_iter().map(|i| trim(&i, cols)).collect(),
            None => items,
        };
        let body = match self.page {
            None => Value::Array(items),
            Some((page, size)) => json!({
                "filtered_count": filtered,
                "item_count": items.len(),
                "items": items,
                "page": page,
                "page_count": filtered.div_ceil(size),
                "page_size": size,
                "total_count": total,
            }),
        };
        json_response(&body)
    }

    /// One object (a `show` route), with `columns` applied.
    pub fn one(&self, item: Value) -> Response {
        let item = match &self.columns {
            Some(cols) => trim(&item, cols),
            None => item,
        };
        json_response(&item)
    }
}

/// A JSON body, serialised once.
pub fn json_response(body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = bytes.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The value at a dotted path.
fn pick<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// RabbitMQ sorts Erlang terms: missing < numbers < text, and so on.
fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(Value::Array(_)) => 4,
            Some(Value::Object(_)) => 5,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Keep only the `columns` of `item` (dotted paths into nested objects).
fn trim(item: &Value, columns: &[Vec<String>]) -> Value {
    let mut out = Map::new();
    for path in columns {
        // RabbitMQ treats an argument table as one value: `arguments.x`
        // keeps the whole table.
        let path = match path.first().map(String::as_str) {
            Some("arguments") => &path[..1],
            _ => &path[..],
        };
        if let Some(v) = pick(item, path) {
            insert_path(&mut out, path, v.clone());
        }
    }
    Value::Object(out)
}

fn insert_path(out: &mut Map<String, Value>, path: &[String], v: Value) {
    match path {
        [] => {}
        [last] => {
            out.insert(last.clone(), v);
        }
        [first, rest @ ..] => {
            let child = out
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = child {
                insert_path(m, rest, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Listing {
        let p: ListParams = serde_urlencoded_like(q);
        p.check().unwrap()
    }

    fn serde_urlencoded_like(q: &str) -> ListParams {
        let mut p = ListParams::default();
        for pair in q.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            let v = Some(v.to_string());
            match k {
                "page" => p.page = v,
                "page_size" => p.page_size = v,
                "name" => p.name = v,
                "use_regex" => p.use_regex = v,
                "sort" => p.sort = v,
                "sort_reverse" => p.sort_reverse = v,
                "columns" => p.columns = v,
                _ => {}
            }
        }
        p
    }

    async fn body(r: Response) -> Value {
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn keys() -> Vec<(String, u64)> {
        (0..250).map(|i| (format!("q{i:03}"), 250 - i)).collect()
    }

    fn render(k: &(String, u64)) -> Option<Value> {
        Some(json!({"name": k.0, "messages": k.1, "stats": {"n": k.1}}))
    }

    #[tokio::test]
    async fn a_page_renders_only_its_keys() {
        let rendered = std::cell::Cell::new(0);
        let l = params("page=2&page_size=100");
        let r = l
            .list(
                keys(),
                "name",
                |k| &k.0,
                |k| {
                    rendered.set(rendered.get() + 1);
                    render(k)
                },
            )
            .unwrap();
        assert_eq!(rendered.get(), 100);
        let b = body(r).await;
        assert_eq!(b["total_count"], 250);
        assert_eq!(b["filtered_count"], 250);
        assert_eq!(b["page_count"], 3);
        assert_eq!(b["item_count"], 100);
        assert_eq!(b["items"][0]["name"], "q100");
    }

    #[tokio::test]
    async fn sorting_on_a_field_sorts_everything_first() {
        let l = params("sort=stats.n&page=1&page_size=2&columns=name,stats.n");
        let b = body(l.list(keys(), "name", |k| &k.0, render).unwrap()).await;
        assert_eq!(
            b["items"],
            json!([{"name": "q249", "stats": {"n": 1}}, {"name": "q248", "stats": {"n": 2}}])
        );
        let l = params("sort=name&sort_reverse=true");
        let b = body(l.list(keys(), "name", |k| &k.0, render).unwrap()).await;
        assert_eq!(b[0]["name"], "q249");
    }

    #[tokio::test]
    async fn the_name_filter_needs_a_page() {
        let l = params("name=q24");
        let b = body(l.list(keys(), "name", |k| &k.0, render).unwrap()).await;
        assert_eq!(b.as_array().unwrap().len(), 250);
        let l = params("page=1&name=q24&use_regex=false");
        let b = body(l.list(keys(), "name", |k| &k.0, render).unwrap()).await;
        assert_eq!(b["filtered_count"], 10);
        let l = params("page=1&name=^Q0[0-4]9$&use_regex=true");
        let b = body(l.list(keys(), "name", |k| &k.0, render).unwrap()).await;
        assert_eq!(b["filtered_count"], 5);
    }

    #[test]
    fn bad_pages_are_refused_as_rabbitmq_does() {
        for q in ["page=1&page_size=501", "page=0"] {
            let e = serde_urlencoded_like(q).check().unwrap_err();
            assert!(matches!(e, ApiError::Pagination(_)), "{q}");
        }
        let e = serde_urlencoded_like("page=x").check().unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(_)));
        let l = params("page=4&page_size=100");
        assert!(l.list(keys(), "name", |k| &k.0, render).is_err());
    }
}
