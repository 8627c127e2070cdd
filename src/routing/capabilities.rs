//! What each model can serve (`MODEL_CAPABILITIES`, filled in by what Groq's model list and
//! Groq's refusals teach), what a request needs of a model (`Needs`), and whether a model can
//! take it (`Fit`): a model lacking a *hard* need (tools, a structured output type, images,
//! room for the request) is skipped without a call; a *soft* hint it does not take (a reasoning
//! parameter) is dropped for that model only. A field left out is unknown, and unknown means
//! able.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bindings::{table, BindingValue};
use crate::json::{cut, named};
use crate::routing::registry::{model_id_ok, MODEL_ID_RULE};

named! {
    /// A reasoning parameter: a soft hint, dropped for a model that does not take it.
    #[derive(PartialOrd, Ord, Hash)]
    pub enum ReasoningParam {
        Effort = "reasoning_effort",
        Format = "reasoning_format",
        Include = "include_reasoning",
    }
}

impl ReasoningParam {
    pub const ALL: [ReasoningParam; 3] = [
        ReasoningParam::Effort,
        ReasoningParam::Format,
        ReasoningParam::Include,
    ];

    pub fn named(name: &str) -> Option<ReasoningParam> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

named! {
    /// A hard need: a model without it cannot serve the request.
    #[derive(PartialOrd, Ord)]
    pub enum Capability {
        Tools = "tools",
        JsonSchema = "json_schema",
        JsonObject = "json_object",
        Images = "images",
        /// The request's prompt and completion fit the model's context window.
        ContextWindow = "context_window",
        /// The completion limit asked for is within the model's.
        MaxCompletionTokens = "max_completion_tokens",
    }
}

impl Capability {
    /// How a skip names it: `lacks_tools`, `context_window_too_small`, ….
    pub fn skip_reason(self) -> &'static str {
        match self {
            Capability::Tools => "lacks_tools",
            Capability::JsonSchema => "lacks_json_schema",
            Capability::JsonObject => "lacks_json_object",
            Capability::Images => "lacks_images",
            Capability::ContextWindow => "context_window_too_small",
            Capability::MaxCompletionTokens => "max_completion_tokens_too_small",
        }
    }

    /// In words, for messages: "takes tool calls".
    pub fn described(self) -> &'static str {
        match self {
            Capability::Tools => "takes tool calls (`tools`)",
            Capability::JsonSchema => "takes structured outputs (`response_format` `json_schema`)",
            Capability::JsonObject => "takes JSON mode (`response_format` `json_object`)",
            Capability::Images => "takes image input",
            Capability::ContextWindow => "has a context window large enough for this request",
            Capability::MaxCompletionTokens => "allows this many completion tokens",
        }
    }
}

/// What one model can serve; `None`: unknown, which means able.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_object: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<bool>,
    /// The reasoning parameters the model takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_params: Option<Vec<String>>,
    /// The `reasoning_effort` values the model takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_efforts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
}

/// What a request needs of a model, read from its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub tools: bool,
    pub json_schema: bool,
    pub json_object: bool,
    pub images: bool,
    /// The reasoning parameters the request sets, and its `reasoning_effort` value.
    pub reasoning: Vec<ReasoningParam>,
    pub reasoning_effort: Option<String>,
    /// The prompt's size in tokens, estimated (a token per 4 bytes of `messages`, rounded up).
    pub prompt_tokens: u64,
    /// The completion limit asked for (or a task's cap), if any.
    pub completion_tokens: Option<u64>,
}

impl Needs {
    /// The hard needs, in the order a refusal names them.
    pub fn hard(&self) -> Vec<Capability> {
        let wanted = [
            (self.tools, Capability::Tools),
            (self.json_schema, Capability::JsonSchema),
            (self.json_object, Capability::JsonObject),
            (self.images, Capability::Images),
        ];
        wanted
            .into_iter()
            .filter(|(w, _)| *w)
            .map(|(_, c)| c)
            .collect()
    }
}

/// Whether a model can take a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// It can, without the reasoning parameters listed (which it does not take).
    Serves { dropped: Vec<ReasoningParam> },
    /// It lacks this.
    Lacks(Capability),
}

impl Capabilities {
    /// Whether this model can take a request needing `needs`. Unknown means able.
    pub fn fit(&self, needs: &Needs) -> Fit {
        let lacks = |known: Option<bool>| known == Some(false);
        let hard = [
            (needs.tools && lacks(self.tools), Capability::Tools),
            (
                needs.json_schema && lacks(self.json_schema),
                Capability::JsonSchema,
            ),
            (
                needs.json_object && lacks(self.json_object),
                Capability::JsonObject,
            ),
            (needs.images && lacks(self.images), Capability::Images),
        ];
        if let Some((_, missing)) = hard.into_iter().find(|(lacking, _)| *lacking) {
            return Fit::Lacks(missing);
        }
        let completion = needs.completion_tokens.unwrap_or(0);
        if self
            .max_completion_tokens
            .is_some_and(|max| completion > max)
        {
            return Fit::Lacks(Capability::MaxCompletionTokens);
        }
        let wanted = needs.prompt_tokens + completion;
        if self.context_window.is_some_and(|window| wanted > window) {
            return Fit::Lacks(Capability::ContextWindow);
        }
        let takes = |param: ReasoningParam| {
            let listed = self.reasoning_params.as_ref();
            let param_ok = listed.is_none_or(|l| l.iter().any(|p| p == param.as_str()));
            let efforts = self.reasoning_efforts.as_ref();
            let value_ok = param != ReasoningParam::Effort
                || efforts.is_none_or(|l| {
                    needs
                        .reasoning_effort
                        .as_ref()
                        .is_none_or(|v| l.contains(v))
                });
            param_ok && value_ok
        };
        let dropped = needs
            .reasoning
            .iter()
            .copied()
            .filter(|p| !takes(*p))
            .collect();
        Fit::Serves { dropped }
    }

    /// What the configuration says, with what was learned filling what it leaves unknown; a
    /// refusal learned from Groq stands over the table (Groq said no).
    pub fn merged(table: Option<&Capabilities>, learned: Option<&Capabilities>) -> Capabilities {
        let (table, learned) = (
            table.cloned().unwrap_or_default(),
            learned.cloned().unwrap_or_default(),
        );
        let refused = |t: Option<bool>, l: Option<bool>| match l {
            Some(false) => Some(false),
            _ => t.or(l),
        };
        Capabilities {
            tools: refused(table.tools, learned.tools),
            json_schema: refused(table.json_schema, learned.json_schema),
            json_object: refused(table.json_object, learned.json_object),
            images: refused(table.images, learned.images),
            reasoning_params: table.reasoning_params.or(learned.reasoning_params),
            reasoning_efforts: table.reasoning_efforts.or(learned.reasoning_efforts),
            context_window: table.context_window.or(learned.context_window),
            max_completion_tokens: learned
                .max_completion_tokens
                .into_iter()
                .chain(table.max_completion_tokens)
                .min(),
        }
    }

    /// Whether this says anything at all.
    pub fn is_unknown(&self) -> bool {
        *self == Capabilities::default()
    }

    /// Whether the model is known to lack `capability` (one of the four switches).
    pub fn known_to_lack(&self, capability: Capability) -> bool {
        let switch = match capability {
            Capability::Tools => self.tools,
            Capability::JsonSchema => self.json_schema,
            Capability::JsonObject => self.json_object,
            Capability::Images => self.images,
            Capability::ContextWindow | Capability::MaxCompletionTokens => None,
        };
        switch == Some(false)
    }
}

/// Parses `MODEL_CAPABILITIES`: model id → capabilities, as a table or JSON; errors name the
/// entry and what it must hold.
pub fn parse_capabilities(value: BindingValue) -> Result<BTreeMap<String, Capabilities>, String> {
    let holds = "model id → { tools, json_schema, json_object, images: true or false; reasoning_params, reasoning_efforts: lists; context_window, max_completion_tokens: numbers }";
    table("MODEL_CAPABILITIES", value, holds, |members| {
        let mut all = BTreeMap::new();
        for (model, raw) in &members.0 {
            let at = format!("`MODEL_CAPABILITIES.{}`", cut(model, 64));
            if !model_id_ok(model) {
                return Err(format!("{at} is not a valid model id ({MODEL_ID_RULE})"));
            }
            let capabilities: Capabilities = serde_json::from_str(raw.get())
                .map_err(|e| format!("{at} must be {{ {holds} }}: {e}"))?;
            let params = capabilities.reasoning_params.iter().flatten();
            if let Some(unknown) = params
                .into_iter()
                .find(|p| ReasoningParam::named(p).is_none())
            {
                let known = ReasoningParam::ALL.map(ReasoningParam::as_str).join(", ");
                return Err(format!(
                    "{at}.reasoning_params: `{}` is not one of {known}",
                    cut(unknown, 32)
                ));
            }
            let limits = [
                capabilities.context_window,
                capabilities.max_completion_tokens,
            ];
            if limits.contains(&Some(0)) {
                return Err(format!(
                    "{at}: `context_window` and `max_completion_tokens` must be at least 1"
                ));
            }
            all.insert(model.to_string(), capabilities);
        }
        Ok(all)
    })
}
