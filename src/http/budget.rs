//! Budgets (`BUDGETS`): limits on what users, clients, tasks and the whole deployment spend, in
//! USD and tokens per UTC day and month. Before a request reaches Groq, its worst case is held
//! in every scope that applies (each a `Ledger` in a Durable Object: exact across isolates and
//! locations); after, its real cost is settled. The `BudgetStore` seam reaches the ledgers.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bindings::{table, BindingValue, Bindings, ConfigFinding, Reader};
use crate::groq::outcome::Outcome;
use crate::http::auth::Caller;
use crate::http::ledger::{Amount, Exceeded, LimitUsage, Limits};
use crate::json::cut;
use crate::routing::capabilities::Needs;
use crate::routing::chain::ModelChain;
use crate::routing::config::RoutingConfig;
use crate::routing::fallback::{Attempt, Verdict};
use crate::routing::log::{write, Level, Log};

/// The Durable Object namespace binding the ledgers live in (class `BudgetLedger`).
pub const LEDGER_BINDING: &str = "BUDGET";

/// A completion limit to hold for a request that sets none and whose models say nothing of
/// theirs.
pub const DEFAULT_HELD_COMPLETION_TOKENS: u64 = 8_192;

/// The kinds of scope, and the `BUDGETS` keys that set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// Each end user (their JWT's client claim), or each anonymous caller's IP.
    User,
    /// Each client key (`client`, or `client:<name>` for one).
    Client,
    /// All callers of one task together (`task:<task>`).
    Task,
    /// The whole deployment (`global`).
    Global,
}

impl ScopeKind {
    /// Whose budget it is, as a refusal says it: never an identity, the task's name at most.
    pub fn described(self, task: &str) -> String {
        match self {
            ScopeKind::User => "your".to_string(),
            ScopeKind::Client => "this client key's".to_string(),
            ScopeKind::Task => format!("the task `{}`'s", cut(task, 64)),
            ScopeKind::Global => "this service's".to_string(),
        }
    }
}

/// `BUDGETS` and `BUDGET_FAIL_OPEN`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetConfig {
    /// By key: `user`, `client`, `client:<name>`, `task:<task>`, `global`.
    pub limits: BTreeMap<String, Limits>,
    /// Let requests through (and log it) when the budget store cannot be reached.
    pub fail_open: bool,
}

/// One scope a request is charged in: the Durable Object's name, and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// `user:alice`, `ip:203.0.113.7`, `client:web`, `task:reasoning`, `global`.
    pub id: String,
    pub kind: ScopeKind,
    pub limits: Limits,
}

impl BudgetConfig {
    pub fn read<B: Bindings>(
        r: &mut Reader<'_, B>,
        routing: &RoutingConfig,
        clients: &[&str],
    ) -> BudgetConfig {
        let limits = r
            .raw("BUDGETS")
            .map_or(Ok(BTreeMap::new()), |v| parse_budgets(v, routing, clients));
        let limits = match (limits, r.raw(LEDGER_BINDING)) {
            (Ok(limits), None) if !limits.is_empty() => Err(format!("`BUDGETS` is set, but no Durable Object is bound as `{LEDGER_BINDING}` to keep them: add the `[[durable_objects.bindings]]` and `[[migrations]]` entries from the README to `wrangler.toml`")),
            (limits, _) => limits,
        };
        BudgetConfig {
            limits: r.ok("BUDGETS", limits, BTreeMap::new()),
            fail_open: r.flag("BUDGET_FAIL_OPEN"),
        }
    }

    pub fn is_set(&self) -> bool {
        !self.limits.is_empty()
    }

    /// The scopes a request by `caller` (from `ip`) for `task` is charged in, each with its
    /// limits; none when no budget applies.
    pub fn scopes(&self, caller: &Caller, ip: Option<&str>, task: &str) -> Vec<Scope> {
        let mut scopes = Vec::new();
        let mut add = |id: String, kind, key: &str| {
            if let Some(limits) = self.limits.get(key) {
                scopes.push(Scope {
                    id,
                    kind,
                    limits: *limits,
                });
            }
        };
        match (&caller.name, caller.user) {
            (Some(name), true) => add(format!("user:{name}"), ScopeKind::User, "user"),
            (None, _) => add(
                format!("ip:{}", ip.unwrap_or("unknown")),
                ScopeKind::User,
                "user",
            ),
            (Some(name), false) => {
                let own = format!("client:{name}");
                let key = match self.limits.contains_key(&own) {
                    true => own.clone(),
                    false => "client".to_string(),
                };
                add(own, ScopeKind::Client, &key);
            }
        }
        add(
            format!("task:{task}"),
            ScopeKind::Task,
            &format!("task:{task}"),
        );
        add("global".to_string(), ScopeKind::Global, "global");
        scopes
    }

    /// The caller's own scope, for `GET /v1/usage`.
    pub fn own_scope(&self, caller: &Caller, ip: Option<&str>) -> Option<Scope> {
        let own = self.scopes(caller, ip, "");
        own.into_iter()
            .find(|s| matches!(s.kind, ScopeKind::User | ScopeKind::Client))
    }

    /// Budgets in USD over chains with unpriced models: those models cost them nothing.
    pub fn unpriced(&self, routing: &RoutingConfig) -> Vec<ConfigFinding> {
        let usd = |l: &Limits| l.usd_per_day.is_some() || l.usd_per_month.is_some();
        let mut findings = Vec::new();
        for (key, limits) in self.limits.iter().filter(|(_, l)| usd(l)) {
            let tasks: Vec<&str> = match key.strip_prefix("task:") {
                Some(task) => vec![task],
                None => routing.task_names(),
            };
            let chains = tasks
                .iter()
                .filter_map(|t| ModelChain::for_task(routing, t));
            let mut unpriced: Vec<String> = chains
                .flat_map(|c| c.entries)
                .map(|e| e.model)
                .filter(|m| !routing.prices.contains_key(m))
                .collect();
            unpriced.sort_unstable();
            unpriced.dedup();
            if !unpriced.is_empty() && usd(limits) {
                let models: Vec<String> = unpriced
                    .iter()
                    .map(|m| format!("`{}`", cut(m, 64)))
                    .collect();
                findings.push(ConfigFinding {
                    binding: "BUDGETS".into(),
                    code: "budget_unpriced",
                    message: format!(
                        "the `{key}` budget limits USD, but {} have no price in `MODEL_PRICES`: their answers cost it nothing (token limits still count them)",
                        models.join(", ")
                    ),
                });
            }
        }
        findings
    }
}

/// What a request holds in each scope: its worst case. Its prompt (estimated) and completion
/// limit (its own, the task's cap, or the largest its models allow), priced at the dearest model
/// of its chain; a model without a price adds tokens only.
pub fn worst_case(needs: &Needs, chain: &ModelChain, routing: &RoutingConfig) -> Amount {
    let model_max = chain
        .models()
        .filter_map(|m| routing.capabilities.get(m)?.max_completion_tokens)
        .max();
    let completion = needs
        .completion_tokens
        .or(model_max)
        .unwrap_or(DEFAULT_HELD_COMPLETION_TOKENS);
    let usd = chain
        .models()
        .filter_map(|m| routing.prices.get(m))
        .map(|p| (needs.prompt_tokens as f64 * p.input + completion as f64 * p.output) / 1e6)
        .fold(0.0, f64::max);
    Amount {
        usd,
        tokens: needs.prompt_tokens + completion,
    }
}

/// The seam to the ledgers: one Durable Object per scope in the Worker, memory in tests.
#[allow(async_fn_in_trait)]
pub trait BudgetStore {
    /// Asks each scope to admit `hold` holding `amount`: per scope, admitted or refused, or
    /// `Err` when its ledger could not be reached in time.
    async fn reserve(
        &self,
        scopes: &[Scope],
        hold: &str,
        amount: Amount,
    ) -> Vec<Result<Result<(), Exceeded>, String>>;

    /// What `scope` has spent of its limits.
    async fn usage(&self, scope: &Scope) -> Result<Vec<LimitUsage>, String>;
}

/// Where a request's settlement goes: queued while it is answered, written after.
pub trait Settlements {
    /// Ends `hold` in `scope`, charging `cost` (zero: a release).
    fn settle(&self, scope: &str, hold: &str, cost: Amount);
}

/// For routers without budgets: never asked, as no request has a scope then.
pub struct NoBudgets;

impl BudgetStore for NoBudgets {
    async fn reserve(
        &self,
        scopes: &[Scope],
        _: &str,
        _: Amount,
    ) -> Vec<Result<Result<(), Exceeded>, String>> {
        scopes
            .iter()
            .map(|_| Err("no budget store".into()))
            .collect()
    }
    async fn usage(&self, _: &Scope) -> Result<Vec<LimitUsage>, String> {
        Err("no budget store".into())
    }
}

impl Settlements for NoBudgets {
    fn settle(&self, _: &str, _: &str, _: Amount) {}
}

/// A request's holds, settled when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub hold: String,
    /// The scopes held in.
    pub scopes: Vec<String>,
    /// What was held in each: what a cost Groq may have billed but did not report settles at.
    pub amount: Amount,
}

impl Reservation {
    /// Settles every scope: the real cost, or (when Groq may have billed more than it reported)
    /// at least the reservation. Never zero for a request that may have been billed.
    pub fn settle(&self, reported: Amount, unreported: bool, to: &dyn Settlements) {
        let cost = match unreported {
            true => Amount {
                usd: reported.usd.max(self.amount.usd),
                tokens: reported.tokens.max(self.amount.tokens),
            },
            false => reported,
        };
        for scope in &self.scopes {
            to.settle(scope, &self.hold, cost);
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    Exceeded { kind: ScopeKind, exceeded: Exceeded },
    Unavailable,
}

/// Holds `amount` in every scope; a refusal in one releases the others. `Ok(None)`: a ledger
/// could not be reached and `BUDGET_FAIL_OPEN` lets the request through (logged).
pub async fn reserve(
    (store, settlements): (&impl BudgetStore, &dyn Settlements),
    fail_open: bool,
    scopes: &[Scope],
    (hold, amount): (&str, Amount),
    (log, request_id): (&dyn Log, &str),
) -> Result<Option<Reservation>, Refused> {
    #[derive(Serialize)]
    struct BudgetUnavailable<'a> {
        request_id: &'a str,
        error: &'a str,
        let_through: bool,
    }
    let answers = store.reserve(scopes, hold, amount).await;
    // Releases every hold that may have been made: an unanswered reserve may have been admitted.
    let release = || {
        for (scope, answer) in scopes.iter().zip(&answers) {
            if !matches!(answer, Ok(Err(_))) {
                settlements.settle(&scope.id, hold, Amount::default());
            }
        }
    };
    let refusal = scopes
        .iter()
        .zip(&answers)
        .filter_map(|(scope, answer)| match answer {
            Ok(Err(exceeded)) => Some((scope.kind, *exceeded)),
            _ => None,
        });
    if let Some((kind, exceeded)) = refusal.max_by_key(|(_, e)| e.resets_ms) {
        release();
        return Err(Refused::Exceeded { kind, exceeded });
    }
    if let Some(Err(error)) = answers.iter().find(|a| a.is_err()) {
        let line = BudgetUnavailable {
            request_id,
            error: cut(error, 200),
            let_through: fail_open,
        };
        write(log, Level::Error, "budget_unavailable", &line);
        release();
        return match fail_open {
            true => Ok(None),
            false => Err(Refused::Unavailable),
        };
    }
    Ok(Some(Reservation {
        hold: hold.to_string(),
        scopes: scopes.iter().map(|s| s.id.clone()).collect(),
        amount,
    }))
}

/// Whether an attempt may have been billed by Groq without its usage reaching the router: a call
/// that timed out, dropped or was abandoned after it was sent, or a completion Groq generated and
/// then refused (`json_validate_failed`, `tool_use_failed`).
pub fn maybe_billed(attempts: &[Attempt]) -> bool {
    attempts.iter().any(|a| match a.verdict {
        Verdict::Called(Outcome::Timeout | Outcome::ConnectionError) => true,
        Verdict::Called(Outcome::ClientDisconnected) => true,
        Verdict::Called(Outcome::CannotServe) => matches!(
            a.code.as_deref(),
            Some("json_validate_failed" | "tool_use_failed")
        ),
        _ => false,
    })
}

/// Parses `BUDGETS`: scope → limits, as a table or JSON; errors name the entry.
pub fn parse_budgets(
    value: BindingValue,
    routing: &RoutingConfig,
    clients: &[&str],
) -> Result<BTreeMap<String, Limits>, String> {
    let holds = "scope (`user`, `client`, `client:<name>`, `task:<task>`, `global`) → { usd_per_day, usd_per_month, tokens_per_day, tokens_per_month }";
    table("BUDGETS", value, holds, |members| {
        let mut budgets = BTreeMap::new();
        for (key, raw) in &members.0 {
            let at = format!("`BUDGETS.{}`", cut(key, 64));
            match key.split_once(':') {
                None if ["user", "client", "global"].contains(&key.as_ref()) => {}
                Some(("client", name)) if clients.contains(&name) => {}
                Some(("client", _)) => {
                    return Err(format!("{at}: no client of that name in `ROUTER_API_KEYS`"))
                }
                Some(("task", task)) if routing.registry.tasks.contains_key(task) => {}
                Some(("task", _)) => {
                    return Err(format!("{at}: no task of that name in `MODEL_REGISTRY`"))
                }
                _ => return Err(format!("{at} is not a scope: {holds}")),
            }
            let limits: Limits = serde_json::from_str(raw.get())
                .map_err(|e| format!("{at} must be {{ usd_per_day, usd_per_month: USD; tokens_per_day, tokens_per_month: whole numbers }}: {e}"))?;
            let usd = [limits.usd_per_day, limits.usd_per_month];
            if usd.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!("{at}: USD limits must be 0 or more"));
            }
            if limits.is_empty() {
                return Err(format!("{at} sets no limit"));
            }
            budgets.insert(key.to_string(), limits);
        }
        Ok(budgets)
    })
}
