//! The budgets' ledgers (`BUDGETS`): one Durable Object of the class `BudgetLedger` per scope,
//! reached through the `BUDGET` binding by the scope's name (`user:alice`, `global`). Durable
//! Objects run one operation at a time wherever they live, so a scope's count is exact across
//! every isolate and location. Each keeps its `Ledger` as one SQLite row; the core decides
//! everything, the object only loads, applies and stores.

use std::cell::{Cell, OnceCell, RefCell};
use std::time::Duration;

use futures_util::future::{join_all, select, Either};
use serde::Serialize;
use worker::{
    durable_object, js_sys, wasm_bindgen::JsValue, web_sys, DurableObject, Env, ObjectNamespace,
    Request, Response, Result, ScheduledTime, SqlStorage, SqlStorageValue, State,
};

use crate::http::budget::{BudgetStore, Scope, Settlements};
use crate::http::ledger::{
    window_end, Amount, Exceeded, Ledger, LedgerAnswer, LedgerOp, LimitUsage, Window,
};
use crate::routing::log::{write, Level};
use crate::runtime::{now_ms, ConsoleLog};

use crate::http::budget::LEDGER_BINDING as BINDING;

/// How long a request waits for its ledgers before it is refused (or let through, with
/// `BUDGET_FAIL_OPEN`): a Durable Object answers in milliseconds from anywhere.
const TIMEOUT_MS: u64 = 1_000;

/// One scope's ledger.
#[durable_object(alarm)]
pub struct BudgetLedger {
    state: State,
    /// The ledger as last stored: an object is the only one that writes its row, so after the
    /// first load it answers from memory and only writes.
    ledger: RefCell<Option<Ledger>>,
    /// The alarm this instance knows is set (epoch ms), so it is written once a month, not per
    /// request.
    armed: Cell<Option<i64>>,
}

impl DurableObject for BudgetLedger {
    fn new(state: State, _env: Env) -> Self {
        BudgetLedger {
            state,
            ledger: RefCell::default(),
            armed: Cell::new(None),
        }
    }

    /// One `LedgerOp` as JSON in, its `LedgerAnswer` out. Apply and store run without an await
    /// between them, so no other operation interleaves.
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let text = req.text().await?;
        let op: LedgerOp = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let now = now_ms();
        let answer = self.update(|ledger| ledger.apply(&op, now))?;
        if !matches!(op, LedgerOp::Usage { .. }) {
            self.arm(now).await?;
        }
        Response::from_json(&answer)
    }

    /// At the end of the month the ledger was last used in: a scope with nothing spent and
    /// nothing held since is deleted (an anonymous caller's IP leaves nothing behind).
    async fn alarm(&self) -> Result<Response> {
        self.armed.set(None);
        let now = now_ms();
        if self.update(|ledger| ledger.is_idle(now))? {
            self.ledger.take();
            self.state.storage().delete_all().await?;
        } else {
            self.arm(now).await?;
        }
        Response::empty()
    }
}

impl BudgetLedger {
    /// Applies `change` to the ledger and stores it; a failed write forgets the copy in memory.
    fn update<T>(&self, change: impl FnOnce(&mut Ledger) -> T) -> Result<T> {
        let sql = self.state.storage().sql();
        let mut held = self.ledger.borrow_mut();
        let ledger = match held.as_mut() {
            Some(ledger) => ledger,
            None => held.insert(load(&sql)?),
        };
        let answer = change(ledger);
        if let Err(e) = store(&sql, ledger) {
            held.take();
            return Err(e);
        }
        Ok(answer)
    }

    /// Sets the alarm for the end of this month, unless it is set already.
    async fn arm(&self, now: u64) -> Result<()> {
        let at = window_end(Window::Month, now) as i64;
        if self.armed.get().is_none() {
            self.armed.set(self.state.storage().get_alarm().await?);
        }
        if self.armed.get() != Some(at) {
            let date = js_sys::Date::new(&JsValue::from_f64(at as f64));
            self.state
                .storage()
                .set_alarm(ScheduledTime::new(date))
                .await?;
            self.armed.set(Some(at));
        }
        Ok(())
    }
}

/// The ledger's row; a scope never used (or deleted) has none. Read raw: a row as typed values,
/// with no JS-object deserializer compiled in for it.
fn load(sql: &SqlStorage) -> Result<Ledger> {
    sql.exec(
        "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY, state TEXT NOT NULL)",
        None,
    )?;
    let cursor = sql.exec("SELECT state FROM ledger WHERE id = 0", None)?;
    let row = cursor.raw().next().transpose()?;
    match row.as_deref() {
        Some([SqlStorageValue::String(state)]) => {
            Ok(serde_json::from_str(state).map_err(|e| e.to_string())?)
        }
        Some(_) => Err("the ledger's row is not one text column".into()),
        None => Ok(Ledger::default()),
    }
}

fn store(sql: &SqlStorage, ledger: &Ledger) -> Result<()> {
    let state = serde_json::to_string(ledger).map_err(|e| e.to_string())?;
    sql.exec(
        "INSERT INTO ledger (id, state) VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state",
        vec![state.into()],
    )?;
    Ok(())
}

/// The Worker's side: asks the scopes' objects, in parallel and within `TIMEOUT_MS`; queues
/// settlements while the request is answered and sends them after.
pub struct DurableBudgets {
    env: Env,
    /// The binding, looked up at the first ledger asked: a router without budgets never does.
    namespace: OnceCell<Option<ObjectNamespace>>,
    queued: RefCell<Vec<(String, String, Amount)>>,
}

impl DurableBudgets {
    pub fn from_env(env: &Env) -> DurableBudgets {
        DurableBudgets {
            env: env.clone(),
            namespace: OnceCell::new(),
            queued: RefCell::default(),
        }
    }

    /// Sends the queued settlements. One that fails leaves its hold to expire, when it is charged
    /// at its reservation (never at zero): a warn line says so.
    pub async fn flush(&self, log: ConsoleLog) {
        #[derive(Serialize)]
        struct BudgetSettleFailed<'a> {
            scope: &'a str,
            hold: &'a str,
            error: &'a str,
        }
        let queued = self.queued.take();
        if queued.is_empty() {
            return;
        }
        let ops = queued.iter().map(|(scope, hold, cost)| {
            let op = LedgerOp::Settle { hold, cost: *cost };
            (scope.as_str(), op)
        });
        let answers = self.ask_all(ops.collect()).await;
        for (answer, (scope, hold, _)) in answers.into_iter().zip(&queued) {
            if let Err(error) = answer {
                let line = BudgetSettleFailed {
                    scope,
                    hold,
                    error: crate::json::cut(&error, 200),
                };
                write(&log, Level::Warn, "budget_settle_failed", &line);
            }
        }
    }

    async fn ask(
        &self,
        scope: &str,
        op: LedgerOp<'_>,
    ) -> std::result::Result<LedgerAnswer, String> {
        let namespace = self
            .namespace
            .get_or_init(|| self.env.durable_object(BINDING).ok());
        let Some(namespace) = namespace else {
            return Err(format!("no Durable Object is bound as `{BINDING}`"));
        };
        let sent = async {
            let stub = namespace.get_by_name(scope)?;
            let body = serde_json::to_string(&op).map_err(|e| e.to_string())?;
            // `web_sys`'s `RequestInit`, as for Groq's calls: `worker`'s converts `cf` options.
            let init = web_sys::RequestInit::new();
            init.set_method("POST");
            init.set_body(&JsValue::from_str(&body));
            let request =
                web_sys::Request::new_with_str_and_init("https://budget.internal/", &init)
                    .map(Request::from)?;
            let mut answer = stub.fetch_with_request(request).await?;
            let text = answer.text().await?;
            serde_json::from_str(&text).map_err(|e| worker::Error::RustError(e.to_string()))
        };
        sent.await.map_err(|e: worker::Error| e.to_string())
    }

    /// `ask` for each of `ops`, all within `TIMEOUT_MS`.
    async fn ask_all(
        &self,
        ops: Vec<(&str, LedgerOp<'_>)>,
    ) -> Vec<std::result::Result<LedgerAnswer, String>> {
        let count = ops.len();
        let asked = join_all(ops.into_iter().map(|(scope, op)| self.ask(scope, op)));
        let timeout = worker::Delay::from(Duration::from_millis(TIMEOUT_MS));
        match select(Box::pin(asked), timeout).await {
            Either::Left((answers, _)) => answers,
            Either::Right(_) => {
                let late = format!("no answer within {TIMEOUT_MS} ms");
                vec![Err(late); count]
            }
        }
    }
}

impl BudgetStore for DurableBudgets {
    async fn reserve(
        &self,
        scopes: &[Scope],
        hold: &str,
        amount: Amount,
    ) -> Vec<std::result::Result<std::result::Result<(), Exceeded>, String>> {
        let ops = scopes.iter().map(|s| {
            let op = LedgerOp::Reserve {
                hold,
                amount,
                limits: s.limits,
            };
            (s.id.as_str(), op)
        });
        let answers = self.ask_all(ops.collect()).await;
        let read = answers.into_iter().map(|answer| match answer? {
            LedgerAnswer::Admitted => Ok(Ok(())),
            LedgerAnswer::Refused(exceeded) => Ok(Err(exceeded)),
            _ => Err("the ledger did not answer the reserve".to_string()),
        });
        read.collect()
    }

    async fn usage(&self, scope: &Scope) -> std::result::Result<Vec<LimitUsage>, String> {
        let op = LedgerOp::Usage {
            limits: scope.limits,
        };
        let answers = self.ask_all(vec![(&scope.id, op)]).await;
        match answers.into_iter().next() {
            Some(Ok(LedgerAnswer::Usage(usage))) => Ok(usage),
            Some(Err(error)) => Err(error),
            _ => Err("the ledger did not answer the usage query".to_string()),
        }
    }
}

impl Settlements for DurableBudgets {
    fn settle(&self, scope: &str, hold: &str, cost: Amount) {
        let settlement = (scope.to_string(), hold.to_string(), cost);
        self.queued.borrow_mut().push(settlement);
    }
}
