//! `Ledger`: what one budget scope (a user, a client, a task, the whole deployment) has spent in
//! its current UTC day and month, and what requests in flight hold of it. Sans-IO: every method
//! takes `now_ms`. The Worker keeps one per scope in a Durable Object, which runs its operations
//! one at a time; tests keep them in memory.
//!
//! A request is admitted while what is spent and held stays below every limit, and then holds its
//! worst case until it settles its real cost: requests in flight together cannot pass a limit by
//! more than the last one's hold.

use serde::{Deserialize, Serialize};

use crate::json::named;

/// How long a hold may wait for its settlement: past it, the request is presumed lost and its
/// hold is charged as spent (never zero).
pub const HOLD_TTL_MS: u64 = 60 * 60 * 1000;

named! {
    /// A calendar window, in UTC.
    #[derive(PartialOrd, Ord)]
    pub enum Window {
        Day = "day",
        Month = "month",
    }
}

/// A scope's limits; unset: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
}

named! {
    /// One limit of a scope.
    pub enum LimitKind {
        UsdPerDay = "usd_per_day",
        UsdPerMonth = "usd_per_month",
        TokensPerDay = "tokens_per_day",
        TokensPerMonth = "tokens_per_month",
    }
}

impl LimitKind {
    pub fn window(self) -> Window {
        match self {
            LimitKind::UsdPerDay | LimitKind::TokensPerDay => Window::Day,
            LimitKind::UsdPerMonth | LimitKind::TokensPerMonth => Window::Month,
        }
    }

    pub fn in_usd(self) -> bool {
        matches!(self, LimitKind::UsdPerDay | LimitKind::UsdPerMonth)
    }
}

impl Limits {
    /// Each limit set, with its value (tokens as a number).
    pub fn each(&self) -> Vec<(LimitKind, f64)> {
        let set = [
            (LimitKind::UsdPerDay, self.usd_per_day),
            (LimitKind::UsdPerMonth, self.usd_per_month),
            (
                LimitKind::TokensPerDay,
                self.tokens_per_day.map(|t| t as f64),
            ),
            (
                LimitKind::TokensPerMonth,
                self.tokens_per_month.map(|t| t as f64),
            ),
        ];
        set.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.each().is_empty()
    }
}

/// An amount of spend: USD and tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Amount {
    pub usd: f64,
    pub tokens: u64,
}

impl Amount {
    fn of(&self, kind: LimitKind) -> f64 {
        match kind.in_usd() {
            true => self.usd,
            false => self.tokens as f64,
        }
    }

    fn add(&mut self, other: Amount) {
        self.usd += other.usd;
        self.tokens += other.tokens;
    }
}

/// What a window has spent, and which window it is (`2026-12-08`, `2026-12`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Spent {
    key: String,
    amount: Amount,
}

/// A request in flight's hold on the scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Hold {
    id: String,
    amount: Amount,
    expires_ms: u64,
}

/// A refusal: the limit reached, and when its window starts again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Exceeded {
    pub limit: LimitKind,
    pub value: f64,
    pub resets_ms: u64,
}

/// What a scope has of one limit, for `GET /v1/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LimitUsage {
    pub limit: LimitKind,
    pub value: f64,
    pub spent: f64,
    pub held: f64,
    pub remaining: f64,
    pub resets_ms: u64,
}

/// What the Worker asks of a scope's Durable Object: the limits come with each request, so a
/// changed `BUDGETS` applies at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerOp<'a> {
    Reserve {
        hold: &'a str,
        amount: Amount,
        limits: Limits,
    },
    Settle {
        hold: &'a str,
        cost: Amount,
    },
    Usage {
        limits: Limits,
    },
}

/// The Durable Object's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAnswer {
    Admitted,
    Refused(Exceeded),
    Settled,
    Usage(Vec<LimitUsage>),
}

/// One scope's spend, as the Durable Object stores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    day: Spent,
    month: Spent,
    holds: Vec<Hold>,
}

impl Ledger {
    /// Admits a request holding `amount` while what is spent and held is below every limit
    /// (each checked; the one whose window resets last decides a refusal).
    pub fn reserve(
        &mut self,
        id: &str,
        amount: Amount,
        limits: &Limits,
        now_ms: u64,
    ) -> Result<(), Exceeded> {
        self.roll(now_ms);
        let held = self.held();
        let refusals = limits.each().into_iter().filter_map(|(kind, value)| {
            let used = self.spent(kind.window()).of(kind) + held.of(kind);
            (used >= value).then(|| Exceeded {
                limit: kind,
                value,
                resets_ms: window_end(kind.window(), now_ms),
            })
        });
        if let Some(refusal) = refusals.max_by_key(|e| e.resets_ms) {
            return Err(refusal);
        }
        // Two holds may share an id (callers choose request ids): each is settled once.
        self.holds.push(Hold {
            id: id.to_string(),
            amount,
            expires_ms: now_ms + HOLD_TTL_MS,
        });
        Ok(())
    }

    /// Ends a request's hold, charging what it really cost (zero: a release).
    pub fn settle(&mut self, id: &str, cost: Amount, now_ms: u64) {
        self.roll(now_ms);
        // A hold that expired was charged already, at its worst case.
        if let Some(at) = self.holds.iter().position(|h| h.id == id) {
            self.holds.swap_remove(at);
            self.day.amount.add(cost);
            self.month.amount.add(cost);
        }
    }

    /// Nothing spent this month and nothing held: the scope can be forgotten.
    pub fn is_idle(&mut self, now_ms: u64) -> bool {
        self.roll(now_ms);
        self.holds.is_empty() && self.month.amount == Amount::default()
    }

    /// Answers one operation of the Worker's.
    pub fn apply(&mut self, op: &LedgerOp<'_>, now_ms: u64) -> LedgerAnswer {
        match op {
            LedgerOp::Reserve {
                hold,
                amount,
                limits,
            } => match self.reserve(hold, *amount, limits, now_ms) {
                Ok(()) => LedgerAnswer::Admitted,
                Err(exceeded) => LedgerAnswer::Refused(exceeded),
            },
            LedgerOp::Settle { hold, cost } => {
                self.settle(hold, *cost, now_ms);
                LedgerAnswer::Settled
            }
            LedgerOp::Usage { limits } => LedgerAnswer::Usage(self.usage(limits, now_ms)),
        }
    }

    /// Each limit's spend, holds, what remains and when it resets.
    pub fn usage(&mut self, limits: &Limits, now_ms: u64) -> Vec<LimitUsage> {
        self.roll(now_ms);
        let held = self.held();
        let each = limits.each().into_iter().map(|(kind, value)| {
            let spent = self.spent(kind.window()).of(kind);
            LimitUsage {
                limit: kind,
                value,
                spent,
                held: held.of(kind),
                remaining: (value - spent - held.of(kind)).max(0.0),
                resets_ms: window_end(kind.window(), now_ms),
            }
        });
        each.collect()
    }

    /// When an expired hold next needs charging (for the Durable Object's alarm).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.holds.iter().map(|h| h.expires_ms).min()
    }

    /// Starts new windows at their UTC boundaries; charges holds that were never settled.
    fn roll(&mut self, now_ms: u64) {
        for (spent, window) in [
            (&mut self.day, Window::Day),
            (&mut self.month, Window::Month),
        ] {
            let key = window_key(window, now_ms);
            if spent.key != key {
                *spent = Spent {
                    key,
                    amount: Amount::default(),
                };
            }
        }
        let (expired, live): (Vec<Hold>, Vec<Hold>) =
            self.holds.drain(..).partition(|h| h.expires_ms <= now_ms);
        self.holds = live;
        // Charged in the windows they expired in, if those are still current.
        for hold in expired {
            for (spent, window) in [
                (&mut self.day, Window::Day),
                (&mut self.month, Window::Month),
            ] {
                if window_key(window, hold.expires_ms) == spent.key {
                    spent.amount.add(hold.amount);
                }
            }
        }
    }

    fn spent(&self, window: Window) -> Amount {
        match window {
            Window::Day => self.day.amount,
            Window::Month => self.month.amount,
        }
    }

    fn held(&self) -> Amount {
        let mut held = Amount::default();
        for hold in &self.holds {
            held.add(hold.amount);
        }
        held
    }
}

/// `2026-12-08` or `2026-12`: the window `now_ms` falls in.
pub fn window_key(window: Window, now_ms: u64) -> String {
    let date = utc_date(now_ms);
    match window {
        Window::Day => date,
        Window::Month => date[..7].to_string(),
    }
}

/// When the window `now_ms` falls in ends: the next UTC midnight, or the first of next month.
pub fn window_end(window: Window, now_ms: u64) -> u64 {
    match window {
        Window::Day => (now_ms / DAY_MS + 1) * DAY_MS,
        Window::Month => {
            let date = utc_date(now_ms);
            let (year, month): (u32, u32) = (
                date[..4].parse().expect("a four-digit year"),
                date[5..7].parse().expect("a two-digit month"),
            );
            let (year, month) = match month {
                12 => (year + 1, 1),
                m => (year, m + 1),
            };
            let start = format!("{year:04}-{month:02}-01T00:00:00Z");
            let at = humantime::parse_rfc3339(&start).expect("a valid date");
            let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            since.as_millis() as u64
        }
    }
}

const DAY_MS: u64 = 86_400_000;

/// `2026-12-08`, the UTC date of `ms`.
fn utc_date(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-08T12:00:00Z.
    const NOON: u64 = 1_796_731_200_000;
    const DAY_LIMIT: Limits = Limits {
        usd_per_day: Some(1.0),
        usd_per_month: None,
        tokens_per_day: None,
        tokens_per_month: Some(10_000),
    };

    fn usd(usd: f64, tokens: u64) -> Amount {
        Amount { usd, tokens }
    }

    #[test]
    fn windows_are_utc_calendar_days_and_months() {
        assert_eq!(window_key(Window::Day, NOON), "2026-12-08");
        assert_eq!(window_key(Window::Month, NOON), "2026-12");
        assert_eq!(utc_date(window_end(Window::Day, NOON)), "2026-12-09");
        assert_eq!(window_end(Window::Day, NOON) % DAY_MS, 0);
        assert_eq!(utc_date(window_end(Window::Month, NOON)), "2027-01-01");
        let feb = NOON - 300 * DAY_MS;
        assert_eq!(window_key(Window::Month, feb), "2026-02");
        assert_eq!(utc_date(window_end(Window::Month, feb)), "2026-03-01");
    }

    #[test]
    fn holds_admit_below_the_limit_and_settle_their_real_cost() {
        let mut ledger = Ledger::default();
        ledger
            .reserve("a", usd(0.6, 100), &DAY_LIMIT, NOON)
            .unwrap();
        ledger
            .reserve("b", usd(0.6, 100), &DAY_LIMIT, NOON)
            .unwrap();
        // Held 1.2 of 1.0: no more until something settles.
        let refused = ledger
            .reserve("c", usd(0.01, 1), &DAY_LIMIT, NOON)
            .unwrap_err();
        assert_eq!(refused.limit, LimitKind::UsdPerDay);
        assert_eq!(refused.resets_ms, window_end(Window::Day, NOON));
        ledger.settle("a", usd(0.1, 40), NOON + 1);
        ledger.settle("b", Amount::default(), NOON + 1);
        let usage = ledger.usage(&DAY_LIMIT, NOON + 2);
        assert_eq!(
            (usage[0].spent, usage[0].held, usage[0].remaining),
            (0.1, 0.0, 0.9)
        );
        assert_eq!(
            (usage[1].limit, usage[1].spent),
            (LimitKind::TokensPerMonth, 40.0)
        );
        // Settling twice charges once.
        ledger.settle("a", usd(0.1, 40), NOON + 3);
        assert_eq!(ledger.usage(&DAY_LIMIT, NOON + 4)[0].spent, 0.1);
    }

    #[test]
    fn two_requests_with_one_id_hold_and_settle_apart() {
        let mut ledger = Ledger::default();
        ledger
            .reserve("same", usd(0.3, 1), &DAY_LIMIT, NOON)
            .unwrap();
        ledger
            .reserve("same", usd(0.3, 1), &DAY_LIMIT, NOON)
            .unwrap();
        ledger.settle("same", usd(0.1, 1), NOON);
        let usage = ledger.usage(&DAY_LIMIT, NOON);
        assert_eq!((usage[0].spent, usage[0].held), (0.1, 0.3));
    }

    #[test]
    fn operations_travel_as_json() {
        let op = LedgerOp::Reserve {
            hold: "req_1",
            amount: usd(1.0, 300),
            limits: DAY_LIMIT,
        };
        let text = serde_json::to_string(&op).unwrap();
        assert_eq!(
            text,
            r#"{"reserve":{"hold":"req_1","amount":{"usd":1.0,"tokens":300},"limits":{"usd_per_day":1.0,"tokens_per_month":10000}}}"#
        );
        let mut ledger = Ledger::default();
        let read: LedgerOp = serde_json::from_str(&text).unwrap();
        let answer = ledger.apply(&read, NOON);
        assert_eq!(serde_json::to_string(&answer).unwrap(), r#""admitted""#);
        let refused = ledger.apply(&read, NOON);
        let text = serde_json::to_string(&refused).unwrap();
        assert!(
            text.starts_with(r#"{"refused":{"limit":"usd_per_day""#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<LedgerAnswer>(&text).unwrap(),
            refused
        );
        let stored = serde_json::to_string(&ledger).unwrap();
        assert_eq!(serde_json::from_str::<Ledger>(&stored).unwrap(), ledger);
        assert!(!ledger.is_idle(NOON));
        assert!(ledger.is_idle(NOON + 40 * DAY_MS));
    }

    #[test]
    fn a_new_day_starts_afresh_and_the_month_remembers() {
        let mut ledger = Ledger::default();
        ledger
            .reserve("a", usd(1.0, 9_000), &DAY_LIMIT, NOON)
            .unwrap();
        ledger.settle("a", usd(1.0, 9_000), NOON);
        assert!(ledger.reserve("b", usd(0.1, 1), &DAY_LIMIT, NOON).is_err());
        let tomorrow = window_end(Window::Day, NOON);
        ledger
            .reserve("b", usd(0.1, 1_000), &DAY_LIMIT, tomorrow)
            .unwrap();
        ledger.settle("b", usd(0.1, 1_000), tomorrow);
        // 10,000 tokens this month: the tightest limit now is the month's, reset on the first.
        let refused = ledger
            .reserve("c", usd(0.1, 1), &DAY_LIMIT, tomorrow)
            .unwrap_err();
        assert_eq!(refused.limit, LimitKind::TokensPerMonth);
        assert_eq!(utc_date(refused.resets_ms), "2027-01-01");
    }

    #[test]
    fn a_hold_never_settled_is_charged_at_its_worst_case() {
        let mut ledger = Ledger::default();
        ledger
            .reserve("lost", usd(0.4, 10), &DAY_LIMIT, NOON)
            .unwrap();
        assert_eq!(ledger.next_expiry_ms(), Some(NOON + HOLD_TTL_MS));
        let later = NOON + HOLD_TTL_MS;
        let usage = ledger.usage(&DAY_LIMIT, later);
        assert_eq!((usage[0].spent, usage[0].held), (0.4, 0.0));
        // Its late settlement charges nothing more.
        ledger.settle("lost", usd(0.1, 1), later + 1);
        assert_eq!(ledger.usage(&DAY_LIMIT, later + 2)[0].spent, 0.4);
    }
}
