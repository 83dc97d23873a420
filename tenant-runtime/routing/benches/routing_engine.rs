//! Routing engine benchmark: 10,000 waiting conversations, 500 agents, 20 skills.
//!
//! Run with `cargo bench -p contact-routing --bench routing_engine` (add `-- --quick` for a
//! shorter run). It prints one table comparing, in the same process on the same data:
//!
//! * a full allocation run: the engine ([`allocate`]) against the naive scan-all-agents
//!   baseline ([`naive::allocate`]);
//! * single-event runs (a conversation closes, a conversation arrives, alternately) on a
//!   saturated queue: the incremental [`RoutingState`] against re-running the naive baseline over
//!   the whole snapshot after each event, which is what a router without incremental runs does.
//!
//! The data is generated from a fixed seed; see `ROUTING.md` for the numbers and their reading.

use std::{
    collections::BTreeMap,
    hint::black_box,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use contact_routing::{
    Agent, AgentId, AgentSkill, Arrival, Categories, Category, CategoryId, ChannelType, ContactId,
    ConversationId, Event, ExplainLevel, LastAgent, RoutingSettings, RoutingState,
    SkillRequirement, Snapshot, WaitingConversation, allocate, naive,
};

const AGENTS: usize = 500;
const WAITING: usize = 10_000;
const SKILLS: usize = 20;
const CATEGORIES: usize = 40;

/// SplitMix64: a tiny deterministic generator, so the benchmark needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
}

fn skill(i: usize) -> String {
    format!("skill-{i:02}")
}

fn categories(rng: &mut Rng) -> Categories {
    let ordered = (0..CATEGORIES)
        .map(|i| {
            let mut required: BTreeMap<usize, SkillRequirement> = BTreeMap::new();
            for _ in 0..1 + rng.below(3) {
                let s = rng.below(SKILLS);
                let mut r = SkillRequirement::new(skill(s));
                if rng.chance(40) {
                    r.min_level = Some(1 + rng.below(4) as u8);
                }
                r.optional = rng.chance(25);
                required.insert(s, r);
            }
            Category {
                id: CategoryId(i as i64 + 1),
                name: format!("category-{i}"),
                priority: rng.below(3) as i32,
                required_skills: required.into_values().collect(),
                rules: vec![],
            }
        })
        .collect();
    Categories {
        ordered,
        default: Category {
            id: CategoryId(0),
            name: "default".into(),
            priority: 0,
            required_skills: vec![],
            rules: vec![],
        },
    }
}

fn agents(rng: &mut Rng) -> Vec<Agent> {
    (0..AGENTS)
        .map(|i| {
            let mut agent = Agent::new(AgentId(i as i64 + 1), 3 + rng.below(6) as u32);
            for _ in 0..6 + rng.below(8) {
                agent.skills.insert(
                    skill(rng.below(SKILLS)),
                    AgentSkill {
                        active: rng.chance(90),
                        level: Some(1 + rng.below(5) as u8),
                    },
                );
            }
            agent.auto_allocate = rng.chance(95);
            if rng.chance(5) {
                agent.status = contact_routing::AgentStatus::Away;
            }
            agent
        })
        .collect()
}

fn conversation(
    rng: &mut Rng,
    categories: &Categories,
    id: i64,
    at: DateTime<Utc>,
) -> WaitingConversation {
    let category = &categories.ordered[rng.below(CATEGORIES)];
    let mut c = WaitingConversation::new(ConversationId(id), at);
    c.category = category.id;
    c.priority = category.priority;
    c.required_skills = category.required_skills.clone();
    if rng.chance(10) {
        c.last_agent = Some(LastAgent {
            agent: AgentId(1 + rng.below(AGENTS) as i64),
            served_at: at - TimeDelta::hours(2),
        });
    }
    c
}

fn snapshot(rng: &mut Rng, categories: &Categories) -> Snapshot {
    let now = epoch();
    let waiting = (0..WAITING)
        .map(|i| {
            let at = now - TimeDelta::seconds(rng.below(110) as i64);
            conversation(rng, categories, i as i64 + 1, at)
        })
        .collect();
    Snapshot {
        agents: agents(rng),
        waiting,
        settings: RoutingSettings::default(),
        now,
    }
}

/// Runs `f` at least `min_runs` times and for at least `min_time`; returns the mean duration.
fn measure<T>(min_runs: u32, min_time: Duration, mut f: impl FnMut() -> T) -> Duration {
    let started = Instant::now();
    let mut runs = 0;
    while runs < min_runs || started.elapsed() < min_time {
        black_box(f());
        runs += 1;
    }
    started.elapsed() / runs
}

struct Row {
    name: &'static str,
    engine: Duration,
    engine_decisions: f64,
    baseline: Duration,
    baseline_decisions: f64,
}

fn per_second(decisions: f64, time: Duration) -> f64 {
    decisions / time.as_secs_f64()
}

/// A state with the snapshot's agents and every waiting conversation applied at its time: the
/// agents end up full and the rest of the queue waits.
fn saturated(snapshot: &Snapshot, categories: &Categories) -> RoutingState {
    let mut state = RoutingState::new(snapshot.settings.clone(), categories.clone());
    let start = snapshot.now;
    for agent in &snapshot.agents {
        state
            .apply(Event::AgentRegistered(agent.clone()), start)
            .expect("register");
    }
    for c in &snapshot.waiting {
        let arrival = Arrival {
            id: c.id,
            contact: c.contact,
            channel: ChannelType::Whatsapp,
            category: c.category,
            last_agent: c.last_agent,
        };
        state
            .apply(Event::ConversationArrived(arrival), start)
            .expect("arrival");
    }
    state
}

/// The baseline's handling of one event: update the plain snapshot, re-run the naive scan and
/// apply its decisions. Returns how many it made.
fn baseline_event(
    snapshot: &mut Snapshot,
    assignment: &mut BTreeMap<ConversationId, AgentId>,
    categories: &Categories,
    event: &Event,
    at: DateTime<Utc>,
) -> usize {
    snapshot.now = at;
    match event {
        Event::ConversationClosed(c) => {
            if let Some(agent) = assignment.remove(c)
                && let Some(a) = snapshot.agents.iter_mut().find(|a| a.id == agent)
            {
                a.load -= 1;
            }
        }
        Event::ConversationArrived(arrival) => {
            let category = categories.get(arrival.category).expect("category");
            let mut c = WaitingConversation::new(arrival.id, at);
            c.category = category.id;
            c.priority = category.priority;
            c.required_skills = category.required_skills.clone();
            c.last_agent = arrival.last_agent;
            snapshot.waiting.push(c);
        }
        _ => {}
    }
    let made = naive::allocate(snapshot);
    let count = made.len();
    for (c, a) in made {
        snapshot.waiting.retain(|w| w.id != c);
        if let Some(agent) = snapshot.agents.iter_mut().find(|x| x.id == a) {
            agent.load += 1;
            agent.last_assigned_at = Some(at);
        }
        assignment.insert(c, a);
    }
    count
}

/// Prints the results as a Markdown table.
fn print_rows(rows: &[Row]) {
    println!(
        "| scenario | engine time/run | engine decisions/s | naive time/run | naive decisions/s | speed-up |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {:.3} ms | {:.0} | {:.3} ms | {:.0} | {:.1}x |",
            row.name,
            row.engine.as_secs_f64() * 1e3,
            per_second(row.engine_decisions, row.engine),
            row.baseline.as_secs_f64() * 1e3,
            per_second(row.baseline_decisions, row.baseline),
            row.baseline.as_secs_f64() / row.engine.as_secs_f64(),
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min_time = Duration::from_millis(if quick { 300 } else { 2_000 });
    let mut rng = Rng(0x00C0_FFEE);
    let categories = categories(&mut rng);
    let snapshot = snapshot(&mut rng, &categories);
    let mut rows = Vec::new();

    // Full allocation runs.
    let decisions = allocate(&snapshot, ExplainLevel::Summary);
    let baseline = naive::allocate(&snapshot);
    let same: Vec<_> = decisions
        .iter()
        .map(|d| (d.conversation, d.agent))
        .collect();
    assert_eq!(same, baseline, "engine and baseline must agree");
    let n = decisions.len() as f64;
    let baseline_time = measure(3, min_time, || naive::allocate(&snapshot));
    rows.push(Row {
        name: "full run, summary explanations",
        engine: measure(5, min_time, || allocate(&snapshot, ExplainLevel::Summary)),
        engine_decisions: n,
        baseline: baseline_time,
        baseline_decisions: n,
    });
    rows.push(Row {
        name: "full run, full explanations",
        engine: measure(3, min_time, || allocate(&snapshot, ExplainLevel::Full)),
        engine_decisions: n,
        baseline: baseline_time,
        baseline_decisions: n,
    });

    // Single-event runs on the saturated queue left by the full run.
    let start = snapshot.now;
    let mut state = saturated(&snapshot, &categories);
    let mut baseline_snapshot = state.snapshot(start);
    let mut assignment: BTreeMap<ConversationId, AgentId> = BTreeMap::new();
    for agent in &snapshot.agents {
        for c in state.assigned_to(agent.id) {
            assignment.insert(c, agent.id);
        }
    }

    // A periodic sweep over the saturated queue: nothing is routable, every conversation is looked
    // at. The engine skips needs no agent can meet; the baseline scans every agent.
    let mut sweep_state = state.clone();
    let sweep = measure(5, min_time, || {
        sweep_state.apply(Event::Tick, start).expect("tick")
    });
    let sweep_baseline = measure(3, min_time, || naive::allocate(&baseline_snapshot));

    let events: usize = if quick { 2_000 } else { 20_000 };
    let mut event_rng = Rng(7);
    let mut next_id = WAITING as i64 + 1;
    let mut applied = Vec::with_capacity(events);
    let mut engine_decisions = 0usize;
    let mut now = start;
    let started = Instant::now();
    for i in 0..events {
        // Events arrive 10 ms apart; no widening threshold is crossed during the run.
        now += TimeDelta::milliseconds(10);
        let event = if i % 2 == 0 {
            let agent = AgentId(1 + event_rng.below(AGENTS) as i64);
            let held = (0..AGENTS as i64)
                .map(|k| AgentId((agent.0 - 1 + k) % AGENTS as i64 + 1))
                .find_map(|a| state.assigned_to(a).next());
            Event::ConversationClosed(held.expect("some agent holds a conversation"))
        } else {
            next_id += 1;
            let c = conversation(&mut event_rng, &categories, next_id, now);
            Event::ConversationArrived(Arrival {
                id: c.id,
                contact: ContactId(next_id),
                channel: ChannelType::Whatsapp,
                category: c.category,
                last_agent: c.last_agent,
            })
        };
        engine_decisions += state.apply(event.clone(), now).expect("event").len();
        applied.push((event, now));
    }
    let incremental = started.elapsed() / events as u32;

    // The baseline: apply the same events to a plain snapshot and re-run the naive scan.
    let sample = applied.len().min(if quick { 10 } else { 40 });
    let mut baseline_decisions = 0usize;
    let started = Instant::now();
    for (event, at) in applied.iter().take(sample) {
        baseline_decisions += baseline_event(
            &mut baseline_snapshot,
            &mut assignment,
            &categories,
            event,
            *at,
        );
    }
    let baseline_per_event = started.elapsed() / sample as u32;
    rows.push(Row {
        name: "sweep (tick) of the saturated queue",
        engine: sweep,
        engine_decisions: 0.0,
        baseline: sweep_baseline,
        baseline_decisions: 0.0,
    });
    rows.push(Row {
        name: "single event (close / arrive)",
        engine: incremental,
        engine_decisions: engine_decisions as f64 / events as f64,
        baseline: baseline_per_event,
        baseline_decisions: baseline_decisions as f64 / sample as f64,
    });

    println!(
        "routing engine: {WAITING} waiting conversations, {AGENTS} agents, {SKILLS} skills, \
         {CATEGORIES} categories; full run = {} decisions",
        decisions.len()
    );
    print_rows(&rows);
    println!(
        "single events: {events} engine events ({:.2} decisions/event), {sample} baseline events \
         ({:.2} decisions/event); time/run is per event",
        engine_decisions as f64 / events as f64,
        baseline_decisions as f64 / sample as f64,
    );
}
