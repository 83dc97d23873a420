//! Property tests: random snapshots and random event sequences.
//!
//! * the engine takes exactly the naive baseline's decisions;
//! * no assignment ever goes to an agent at capacity;
//! * no assignment goes to an agent lacking a required active skill, except for the part of the
//!   requirements that widening relaxed at that instant;
//! * among conversations of equal priority and equal eligibility, the longest waiting is served
//!   first;
//! * identical agents end up with loads within one of each other;
//! * every conversation is exactly one of waiting / assigned to exactly one agent / closed, and
//!   each agent's load is the number of conversations assigned to them;
//! * after every allocation no waiting conversation has an eligible agent (nothing is left
//!   routable), and the incremental run takes exactly the decisions a full run takes;
//! * determinism: the same input gives the same output, whatever the order of the snapshot's
//!   lists.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use proptest::{
    prelude::*,
    test_runner::{FileFailurePersistence, TestCaseError},
};

use super::{tests::t, *};

/// `default` cases (or `PROPTEST_CASES` when set, for long soak runs); failing seeds are kept
/// beside this file.
fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "src/proptest-regressions.txt",
        ))),
        ..ProptestConfig::default()
    }
}

const SKILLS: [&str; 4] = ["a", "b", "c", "d"];
const AGENT_IDS: i64 = 5;

fn skill_name() -> impl Strategy<Value = String> {
    prop::sample::select(SKILLS.to_vec()).prop_map(String::from)
}

fn status() -> impl Strategy<Value = AgentStatus> {
    prop_oneof![
        6 => Just(AgentStatus::Available),
        1 => Just(AgentStatus::Away),
        1 => Just(AgentStatus::Offline),
    ]
}

fn agent(id: i64) -> impl Strategy<Value = Agent> {
    (
        status(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.85),
        0u32..=3,
        0u32..=3,
        prop::collection::btree_map(
            skill_name(),
            (prop::bool::weighted(0.8), prop::option::of(1u8..=5)),
            0..=4,
        ),
        prop::option::of(-100i64..0),
    )
        .prop_map(
            move |(status, connected, auto_allocate, capacity, load, skills, last)| Agent {
                id: AgentId(id),
                status,
                connection: if connected {
                    Connection::Connected
                } else {
                    Connection::Disconnected { since: t(-10) }
                },
                auto_allocate,
                capacity,
                load: load.min(capacity),
                skills: skills
                    .into_iter()
                    .map(|(name, (active, level))| (name, AgentSkill { active, level }))
                    .collect(),
                last_assigned_at: last.map(t),
            },
        )
}

fn agents() -> impl Strategy<Value = Vec<Agent>> {
    (1..=AGENT_IDS).prop_flat_map(|n| (1..=n).map(agent).collect::<Vec<_>>())
}

fn requirement() -> impl Strategy<Value = SkillRequirement> {
    (
        skill_name(),
        prop::option::of(1u8..=5),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(skill, min_level, optional)| SkillRequirement {
            skill,
            min_level,
            optional,
        })
}

fn conversation(id: i64) -> impl Strategy<Value = WaitingConversation> {
    (
        0i32..=2,
        -400i64..=0,
        prop::collection::vec(requirement(), 0..=2),
        prop::option::weighted(0.3, (1..=AGENT_IDS + 1, -100_000i64..0)),
        prop::option::weighted(0.1, 1..=AGENT_IDS + 1),
        prop::option::weighted(0.1, 1..=AGENT_IDS + 1),
    )
        .prop_map(
            move |(priority, enqueued, required_skills, last, pinned, avoid)| WaitingConversation {
                priority,
                required_skills,
                last_agent: last.map(|(agent, at)| LastAgent {
                    agent: AgentId(agent),
                    served_at: t(at),
                }),
                pinned_agent: pinned.map(AgentId),
                avoid_agent: avoid.map(AgentId),
                ..WaitingConversation::new(ConversationId(id), t(enqueued))
            },
        )
}

fn settings() -> impl Strategy<Value = RoutingSettings> {
    (
        prop::bool::ANY,
        prop::option::of(50u32..=300),
        prop::option::of(50u32..=400),
    )
        .prop_map(|(sticky, relax, drop)| RoutingSettings {
            sticky_window_secs: if sticky { 86_400 } else { 0 },
            relax_levels_after_secs: relax,
            drop_optional_after_secs: drop,
            return_to_queue_after_disconnect_secs: 60,
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (agents(), 0usize..=12, settings()).prop_flat_map(|(agents, n, settings)| {
        let waiting = (1..=n as i64).map(conversation).collect::<Vec<_>>();
        (Just(agents), waiting, Just(settings)).prop_map(|(agents, waiting, settings)| Snapshot {
            agents,
            waiting,
            settings,
            now: t(0),
        })
    })
}

/// The skill rule, written independently of the engine: every requirement not widened away
/// must be held active, at the minimum level unless levels are relaxed.
fn meets_skills(
    agent: &Agent,
    conversation: &WaitingConversation,
    now: DateTime<Utc>,
    settings: &RoutingSettings,
) -> bool {
    let waited = now - conversation.enqueued_at;
    let after =
        |secs: Option<u32>| secs.is_some_and(|s| waited >= TimeDelta::seconds(i64::from(s)));
    let levels_relaxed = after(settings.relax_levels_after_secs);
    let optional_dropped = after(settings.drop_optional_after_secs);
    conversation.required_skills.iter().all(|r| {
        if r.optional && optional_dropped {
            return true;
        }
        let Some(held) = agent.skills.get(&r.skill) else {
            return false;
        };
        held.active
            && (levels_relaxed || r.min_level.is_none_or(|min| held.level.unwrap_or(0) >= min))
    })
}

fn check_decisions(snapshot: &Snapshot, decisions: &[Decision]) -> Result<(), TestCaseError> {
    let mut loads: BTreeMap<AgentId, u32> =
        snapshot.agents.iter().map(|a| (a.id, a.load)).collect();
    let mut seen = HashSet::new();
    for d in decisions {
        prop_assert!(seen.insert(d.conversation), "conversation decided twice");
        let agent = snapshot
            .agents
            .iter()
            .find(|a| a.id == d.agent)
            .expect("known agent");
        let conversation = snapshot
            .waiting
            .iter()
            .find(|c| c.id == d.conversation)
            .expect("waiting");
        let load = loads.get_mut(&d.agent).expect("load");
        prop_assert!(*load < agent.capacity, "agent {} over capacity", agent.id);
        *load += 1;
        prop_assert!(meets_skills(
            agent,
            conversation,
            snapshot.now,
            &snapshot.settings
        ));
        prop_assert!(agent.is_reachable());
        prop_assert!(agent.auto_allocate || conversation.pinned_agent == Some(agent.id));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn engine_matches_the_naive_baseline(snapshot in snapshot()) {
        let engine: Vec<(ConversationId, AgentId)> = allocate(&snapshot, ExplainLevel::Summary)
            .into_iter()
            .map(|d| (d.conversation, d.agent))
            .collect();
        prop_assert_eq!(engine, naive::allocate(&snapshot));
    }

    #[test]
    fn capacity_skills_and_availability_hold(snapshot in snapshot()) {
        let decisions = allocate(&snapshot, ExplainLevel::Full);
        check_decisions(&snapshot, &decisions)?;
    }

    #[test]
    fn full_explanations_match_a_plain_replay(snapshot in snapshot()) {
        let decisions = allocate(&snapshot, ExplainLevel::Full);
        let mut agents = snapshot.agents.clone();
        for d in &decisions {
            let c = snapshot.waiting.iter().find(|c| c.id == d.conversation).expect("waiting");
            let widening = snapshot.settings.widening(c.enqueued_at, snapshot.now);
            let expected = engine::verdicts_of(agents.iter().collect(), c, widening);
            prop_assert_eq!(&d.explanation.considered, &expected);
            let winner = agents.iter_mut().find(|a| a.id == d.agent).expect("agent");
            winner.load += 1;
            winner.last_assigned_at = Some(snapshot.now);
        }
    }

    #[test]
    fn longest_waiting_first_among_equals(snapshot in snapshot()) {
        let decisions = allocate(&snapshot, ExplainLevel::Summary);
        let assigned: HashSet<ConversationId> = decisions.iter().map(|d| d.conversation).collect();
        let plain = |c: &&WaitingConversation| {
            c.pinned_agent.is_none() && c.avoid_agent.is_none() && c.last_agent.is_none()
        };
        let plain: Vec<&WaitingConversation> = snapshot.waiting.iter().filter(plain).collect();
        for a in &plain {
            for b in &plain {
                let same = a.priority == b.priority
                    && a.required_skills == b.required_skills
                    && snapshot.settings.widening(a.enqueued_at, snapshot.now)
                        == snapshot.settings.widening(b.enqueued_at, snapshot.now);
                let a_first = (a.enqueued_at, a.id) < (b.enqueued_at, b.id);
                if same && a_first && assigned.contains(&b.id) {
                    prop_assert!(assigned.contains(&a.id), "{} waited longer than {}", a.id, b.id);
                }
            }
        }
    }

    #[test]
    fn identical_agents_share_load_within_one(
        others in agents(),
        identical in 2usize..=4,
        capacity in 1u32..=4,
        skills in prop::collection::btree_set(skill_name(), 0..=3),
        waiting in prop::collection::vec((0i32..=2, -400i64..=0, prop::collection::vec(requirement(), 0..=2)), 0..=16),
    ) {
        let mut agents: Vec<Agent> = others.into_iter().map(|mut a| { a.id.0 += 100; a }).collect();
        for id in 1..=identical as i64 {
            let mut a = Agent::new(AgentId(id), capacity);
            for skill in &skills {
                a = a.with_skill(skill.clone(), Some(3));
            }
            agents.push(a);
        }
        let waiting = waiting
            .into_iter()
            .zip(1..)
            .map(|((priority, at, reqs), id)| WaitingConversation {
                priority,
                required_skills: reqs,
                ..WaitingConversation::new(ConversationId(id), t(at))
            })
            .collect();
        let snapshot = Snapshot { agents, waiting, settings: RoutingSettings::default(), now: t(0) };
        let decisions = allocate(&snapshot, ExplainLevel::Summary);
        let mut loads = vec![0u32; identical];
        for d in &decisions {
            if d.agent.0 <= identical as i64 {
                loads[(d.agent.0 - 1) as usize] += 1;
            }
        }
        let (min, max) = (loads.iter().min().copied(), loads.iter().max().copied());
        prop_assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "loads {:?}", loads);
    }

    #[test]
    fn allocation_is_deterministic_whatever_the_input_order(snapshot in snapshot()) {
        let first = allocate(&snapshot, ExplainLevel::Full);
        let mut reversed = snapshot.clone();
        reversed.agents.reverse();
        reversed.waiting.reverse();
        let mut second = allocate(&reversed, ExplainLevel::Full);
        // Full verdict lists are ordered by rank and id, so they compare equal too.
        prop_assert_eq!(&first, &second);
        second = allocate(&snapshot, ExplainLevel::Full);
        prop_assert_eq!(first, second);
    }
}

/// One step of a random event sequence. Conversations are referred to by arrival index.
#[derive(Debug, Clone)]
enum Op {
    Register(Agent),
    Arrive { category: i64, contact: i64 },
    Online(i64),
    Away(i64),
    Offline(i64),
    Disconnect(i64),
    Reconnect(i64),
    Grace(i64),
    Close(usize),
    Skill(i64, String, bool),
    Auto(i64, bool),
    ToAgent(usize, i64),
    ToCategory(usize, i64),
    Unassign(usize),
    Reopen(usize),
    Tick,
    Pick(i64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let agent_id = 1..=AGENT_IDS;
    let conv = 0usize..40;
    prop_oneof![
        2 => (1..=AGENT_IDS).prop_flat_map(agent).prop_map(Op::Register),
        8 => (0i64..=2, 1i64..=4).prop_map(|(category, contact)| Op::Arrive { category, contact }),
        2 => agent_id.clone().prop_map(Op::Online),
        1 => agent_id.clone().prop_map(Op::Away),
        1 => agent_id.clone().prop_map(Op::Offline),
        1 => agent_id.clone().prop_map(Op::Disconnect),
        1 => agent_id.clone().prop_map(Op::Reconnect),
        1 => agent_id.clone().prop_map(Op::Grace),
        5 => conv.clone().prop_map(Op::Close),
        2 => (agent_id.clone(), skill_name(), prop::bool::ANY).prop_map(|(a, s, on)| Op::Skill(a, s, on)),
        1 => (agent_id.clone(), prop::bool::ANY).prop_map(|(a, on)| Op::Auto(a, on)),
        1 => (conv.clone(), agent_id.clone()).prop_map(|(c, a)| Op::ToAgent(c, a)),
        1 => (conv.clone(), 0i64..=2).prop_map(|(c, k)| Op::ToCategory(c, k)),
        1 => conv.clone().prop_map(Op::Unassign),
        2 => conv.clone().prop_map(Op::Reopen),
        1 => Just(Op::Tick),
        1 => (agent_id, conv).prop_map(|(a, c)| Op::Pick(a, c)),
    ]
}

fn categories() -> Categories {
    let category = |id: i64, priority: i32, required_skills: Vec<SkillRequirement>| Category {
        id: CategoryId(id),
        name: format!("c{id}"),
        priority,
        required_skills,
        rules: vec![],
    };
    Categories {
        ordered: vec![
            category(1, 1, vec![SkillRequirement::new("a")]),
            category(
                2,
                2,
                vec![
                    SkillRequirement::new("b").at_least(3),
                    SkillRequirement::new("c").optional(),
                ],
            ),
        ],
        default: category(0, 0, vec![]),
    }
}

/// Runs a sequence on an incremental and a full-run state in lock-step, checks the invariants
/// after each step and returns the log of outcomes.
fn run_sequence(
    initial: &[Agent],
    settings: &RoutingSettings,
    ops: &[(Op, i64)],
) -> Result<Vec<String>, TestCaseError> {
    let mut incremental =
        RoutingState::new(settings.clone(), categories()).with_explain(ExplainLevel::Full);
    let mut full = incremental.clone();
    let mut now = t(0);
    for agent in initial {
        let event = Event::AgentRegistered(agent.clone());
        prop_assert_eq!(
            incremental.apply(event.clone(), now),
            full.apply_with(event, now, true)
        );
    }
    let mut arrived = 0i64;
    let mut log = Vec::new();
    for (op, advance) in ops {
        now += TimeDelta::seconds(*advance);
        let conv = |index: usize| {
            ConversationId(if arrived == 0 {
                1
            } else {
                index as i64 % arrived + 1
            })
        };
        let event = match op.clone() {
            Op::Pick(agent, index) => {
                let a = incremental.pick(AgentId(agent), conv(index), now);
                let b = full.pick(AgentId(agent), conv(index), now);
                prop_assert_eq!(&a, &b);
                log.push(format!("{a:?}"));
                check_state(&incremental)?;
                continue;
            }
            Op::Register(agent) => Event::AgentRegistered(agent),
            Op::Arrive { category, contact } => Event::ConversationArrived(Arrival {
                id: ConversationId(arrived + 1),
                contact: ContactId(contact),
                channel: ChannelType::Whatsapp,
                category: CategoryId(category),
                last_agent: None,
            }),
            Op::Online(a) => Event::AgentOnline(AgentId(a)),
            Op::Away(a) => Event::AgentAway(AgentId(a)),
            Op::Offline(a) => Event::AgentOffline(AgentId(a)),
            Op::Disconnect(a) => Event::AgentDisconnected(AgentId(a)),
            Op::Reconnect(a) => Event::AgentReconnected(AgentId(a)),
            Op::Grace(a) => Event::GraceExpired(AgentId(a)),
            Op::Close(i) => Event::ConversationClosed(conv(i)),
            Op::Skill(agent, skill, active) => Event::SkillToggled {
                agent: AgentId(agent),
                skill,
                active,
            },
            Op::Auto(agent, on) => Event::AutoAllocateToggled {
                agent: AgentId(agent),
                on,
            },
            Op::ToAgent(i, agent) => Event::TransferToAgent {
                conversation: conv(i),
                agent: AgentId(agent),
            },
            Op::ToCategory(i, category) => Event::TransferToCategory {
                conversation: conv(i),
                category: CategoryId(category),
            },
            Op::Unassign(i) => Event::Unassigned(conv(i)),
            Op::Reopen(i) => Event::Reopened(conv(i)),
            Op::Tick => Event::Tick,
        };
        let outcome = incremental.apply(event.clone(), now);
        let reference = full.apply_with(event, now, true);
        prop_assert_eq!(
            &outcome,
            &reference,
            "incremental and full runs differ after {:?}",
            op
        );
        if matches!(op, Op::Arrive { .. }) && outcome.is_ok() {
            arrived += 1;
        }
        check_state(&incremental)?;
        if let Ok(decisions) = &outcome {
            check_step(&incremental, decisions)?;
            let clock = incremental
                .widening_clock()
                .expect("set by the first event");
            let left = naive::allocate(&incremental.snapshot(clock));
            prop_assert!(left.is_empty(), "still routable after {:?}: {:?}", op, left);
        }
        log.push(format!("{outcome:?}"));
    }
    Ok(log)
}

/// Every conversation is in exactly one place, and loads match the assignments.
fn check_state(state: &RoutingState) -> Result<(), TestCaseError> {
    let queue: Vec<ConversationId> = state.queue().map(|c| c.id).collect();
    let queued: BTreeSet<ConversationId> = queue.iter().copied().collect();
    prop_assert_eq!(queue.len(), queued.len(), "a conversation is queued twice");
    let mut holders: BTreeMap<ConversationId, Vec<AgentId>> = BTreeMap::new();
    for agent in state.agents() {
        let held: Vec<ConversationId> = state.assigned_to(agent.id).collect();
        prop_assert_eq!(agent.load as usize, held.len(), "agent {} load", agent.id);
        for c in held {
            holders.entry(c).or_default().push(agent.id);
        }
    }
    for (id, status) in state.conversations() {
        match status {
            ConversationStatus::Waiting => {
                prop_assert!(queued.contains(&id));
                prop_assert!(!holders.contains_key(&id));
            }
            ConversationStatus::Assigned { agent, .. } => {
                prop_assert!(!queued.contains(&id));
                prop_assert_eq!(holders.get(&id), Some(&vec![agent]));
            }
            ConversationStatus::Closed { .. } => {
                prop_assert!(!queued.contains(&id));
                prop_assert!(!holders.contains_key(&id));
            }
        }
    }
    let known: BTreeSet<ConversationId> = state.conversations().map(|(id, _)| id).collect();
    prop_assert!(queued.is_subset(&known) && holders.keys().all(|id| known.contains(id)));
    Ok(())
}

/// The decisions of one step respect capacity and skills at that instant.
fn check_step(state: &RoutingState, decisions: &[Decision]) -> Result<(), TestCaseError> {
    let mut seen = HashSet::new();
    for d in decisions {
        prop_assert!(seen.insert(d.conversation));
        let w = &d.explanation.winner;
        prop_assert!(w.load < w.capacity, "assigned over capacity: {:?}", w);
        let agent = state.agent(d.agent).expect("agent");
        let conversation = state.conversation(d.conversation).expect("conversation");
        let clock = state.widening_clock().expect("set by the first event");
        prop_assert!(meets_skills(agent, conversation, clock, state.settings()));
        prop_assert!(agent.is_reachable());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn event_sequences_keep_every_invariant(
        initial in agents(),
        settings in settings(),
        ops in prop::collection::vec((op(), 0i64..=120), 1..60),
    ) {
        let first = run_sequence(&initial, &settings, &ops)?;
        let second = run_sequence(&initial, &settings, &ops)?;
        prop_assert_eq!(first, second, "same events, different outcome");
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn a_keyword_between_separators_always_matches(
        before in prop::collection::vec("[a-z]{1,8}", 0..5),
        after in prop::collection::vec("[a-z]{1,8}", 0..5),
        keyword in "[a-z]{1,8}( [a-z]{1,8})?",
        separator in prop::sample::select(vec![" ", ", ", "! ", "\n", " (", "¿"]),
    ) {
        let text = [before.join(" "), keyword.clone(), after.join(" ")].join(separator);
        prop_assert!(categorize::contains_word(&text, &keyword));
    }

    #[test]
    fn a_match_is_a_whole_word_occurrence(text in "[a-zA-Z ,.!]{0,40}", keyword in "[a-z]{1,4}") {
        let lowered = text.to_lowercase();
        if categorize::contains_word(&lowered, &keyword) {
            let whole = lowered
                .split(|c: char| !c.is_alphanumeric())
                .collect::<Vec<_>>()
                .join(" ");
            let padded = format!(" {whole} ");
            prop_assert!(padded.contains(&format!(" {keyword} ")), "{:?} in {:?}", keyword, text);
        }
    }

    #[test]
    fn categorization_ignores_case(message in "[a-zA-Z ]{0,30}") {
        let categories = Categories {
            ordered: vec![Category {
                id: CategoryId(1),
                name: "billing".into(),
                priority: 1,
                required_skills: vec![],
                rules: vec![CategoryRule {
                    keywords: vec!["Refund".into(), "bill".into()],
                    ..CategoryRule::default()
                }],
            }],
            default: Category {
                id: CategoryId(0),
                name: "default".into(),
                priority: 0,
                required_skills: vec![],
                rules: vec![],
            },
        };
        let attributes = BTreeMap::new();
        let at = |text: &str| {
            categorize(&categories, &Inbound {
                channel: ChannelType::Sms,
                channel_app: None,
                first_message: text,
                contact_attributes: &attributes,
            })
            .category
        };
        prop_assert_eq!(at(&message.to_uppercase()), at(&message.to_lowercase()));
    }
}
