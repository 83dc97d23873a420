//! The naive baseline: for every waiting conversation, scan every agent.
//!
//! This is the straightforward reading of the rules in [`super::engine`], with no interning and
//! no candidate sets: `O(conversations × agents × skills)` string comparisons per run. It exists
//! as the reference the property tests compare the engine with, and as the baseline of the
//! benchmark. It returns only `(conversation, agent)` pairs.

use std::cmp::Ordering;

use super::{
    engine::{compare_rank, exclusion},
    model::{AgentId, ConversationId, Snapshot},
};

/// Allocates by scanning all agents for each conversation in queue order.
pub fn allocate(snapshot: &Snapshot) -> Vec<(ConversationId, AgentId)> {
    let settings = &snapshot.settings;
    let now = snapshot.now;
    let mut agents = snapshot.agents.clone();
    let mut waiting: Vec<_> = snapshot.waiting.iter().collect();
    waiting.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.enqueued_at.cmp(&b.enqueued_at))
            .then(a.id.cmp(&b.id))
    });
    let mut out = Vec::new();
    for conversation in waiting {
        let widening = settings.widening(conversation.enqueued_at, now);
        let eligible = |index: usize, agents: &[super::model::Agent]| {
            exclusion(&agents[index], conversation, widening).is_none()
        };
        let sticky = conversation
            .last_agent
            .filter(|last| {
                conversation.pinned_agent.is_none() && settings.sticky_applies(last, now)
            })
            .and_then(|last| agents.iter().position(|a| a.id == last.agent))
            .filter(|&index| eligible(index, &agents));
        let chosen = sticky.or_else(|| {
            (0..agents.len())
                .filter(|&index| eligible(index, &agents))
                .min_by(|&a, &b| match compare_rank(&agents[a], &agents[b]) {
                    Ordering::Equal => agents[a].id.cmp(&agents[b].id),
                    other => other,
                })
        });
        if let Some(index) = chosen {
            let agent = &mut agents[index];
            agent.load += 1;
            agent.last_assigned_at = Some(now);
            out.push((conversation.id, agent.id));
        }
    }
    out
}
