//! Unit tests of the routing rules, explanations and events (property tests are in
//! `proptests.rs`).

use chrono::{DateTime, Utc};

use super::*;

/// Seconds after a fixed epoch.
pub(crate) fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("valid timestamp")
}

fn agent(id: i64) -> Agent {
    Agent::new(AgentId(id), 3)
}

fn conv(id: i64, enqueued: i64) -> WaitingConversation {
    WaitingConversation::new(ConversationId(id), t(enqueued))
}

fn snapshot(agents: Vec<Agent>, waiting: Vec<WaitingConversation>, now: i64) -> Snapshot {
    Snapshot {
        agents,
        waiting,
        settings: RoutingSettings::default(),
        now: t(now),
    }
}

fn pairs(decisions: &[Decision]) -> Vec<(i64, i64)> {
    decisions
        .iter()
        .map(|d| (d.conversation.0, d.agent.0))
        .collect()
}

fn run(s: &Snapshot) -> Vec<Decision> {
    let decisions = allocate(s, ExplainLevel::Full);
    let naive: Vec<(i64, i64)> = naive::allocate(s)
        .into_iter()
        .map(|(c, a)| (c.0, a.0))
        .collect();
    assert_eq!(
        pairs(&decisions),
        naive,
        "engine and naive baseline disagree"
    );
    decisions
}

mod engine_rules {
    use super::*;

    #[test]
    fn longest_waiting_first() {
        let mut a = agent(1);
        a.capacity = 1;
        let s = snapshot(vec![a], vec![conv(1, 20), conv(2, 10)], 30);
        assert_eq!(pairs(&run(&s)), vec![(2, 1)]);
    }

    #[test]
    fn higher_priority_first_then_id_on_equal_enqueue() {
        let mut a = agent(1);
        a.capacity = 2;
        let s = snapshot(
            vec![a],
            vec![conv(3, 0), conv(1, 50).with_priority(5), conv(2, 0)],
            60,
        );
        assert_eq!(pairs(&run(&s)), vec![(1, 1), (2, 1)]);
    }

    #[test]
    fn least_loaded_wins_and_assignment_updates_the_load() {
        let mut busy = agent(1);
        busy.load = 2;
        let s = snapshot(
            vec![busy, agent(2)],
            vec![conv(1, 0), conv(2, 1), conv(3, 2)],
            10,
        );
        let d = run(&s);
        assert_eq!(pairs(&d), vec![(1, 2), (2, 2), (3, 1)]);
        assert_eq!(d[0].explanation.reason, WinReason::LeastLoaded);
        assert_eq!(
            d[0].explanation.runner_up.map(|r| r.agent),
            Some(AgentId(1))
        );
        // After two assignments agent 2 is at 2/3 like agent 1; agent 1 is idle longest.
        assert_eq!(d[2].explanation.reason, WinReason::IdleLongest);
    }

    #[test]
    fn load_is_compared_as_a_ratio_of_capacity() {
        let mut big = agent(1);
        big.capacity = 10;
        big.load = 3;
        let mut small = agent(2);
        small.capacity = 2;
        small.load = 1;
        let d = run(&snapshot(vec![small, big], vec![conv(1, 0)], 1));
        assert_eq!(pairs(&d), vec![(1, 1)]);
        assert_eq!(d[0].explanation.reason, WinReason::LeastLoaded);
    }

    #[test]
    fn ties_go_to_the_agent_idle_longest_then_the_lowest_id() {
        let mut recent = agent(1);
        recent.last_assigned_at = Some(t(100));
        let mut earlier = agent(2);
        earlier.last_assigned_at = Some(t(50));
        let d = run(&snapshot(
            vec![recent.clone(), earlier],
            vec![conv(1, 0)],
            200,
        ));
        assert_eq!(pairs(&d), vec![(1, 2)]);
        assert_eq!(d[0].explanation.reason, WinReason::IdleLongest);

        let never = agent(3);
        let d = run(&snapshot(vec![recent, never], vec![conv(1, 0)], 200));
        assert_eq!(pairs(&d), vec![(1, 3)]);
        assert_eq!(d[0].explanation.reason, WinReason::IdleLongest);

        let d = run(&snapshot(vec![agent(9), agent(4)], vec![conv(1, 0)], 200));
        assert_eq!(pairs(&d), vec![(1, 4)]);
        assert_eq!(d[0].explanation.reason, WinReason::LowestId);
        assert_eq!(
            d[0].explanation.runner_up.map(|r| r.agent),
            Some(AgentId(9))
        );
    }

    #[test]
    fn only_candidate() {
        let mut off = agent(1);
        off.auto_allocate = false;
        let d = run(&snapshot(vec![off, agent(2)], vec![conv(1, 0)], 1));
        assert_eq!(d[0].explanation.reason, WinReason::OnlyCandidate);
        assert_eq!(d[0].explanation.runner_up, None);
    }

    #[test]
    fn sticky_agent_is_preferred_inside_the_window_when_eligible() {
        let mut last = agent(1);
        last.load = 2;
        let mut c = conv(1, 0);
        c.last_agent = Some(LastAgent {
            agent: AgentId(1),
            served_at: t(-3600),
        });
        let d = run(&snapshot(vec![last.clone(), agent(2)], vec![c.clone()], 10));
        assert_eq!(pairs(&d), vec![(1, 1)]);
        assert_eq!(
            d[0].explanation.reason,
            WinReason::Sticky {
                served_at: t(-3600)
            }
        );
        assert_eq!(
            d[0].explanation.runner_up.map(|r| r.agent),
            Some(AgentId(2))
        );

        // Outside the 24 h window: least loaded.
        let mut old = c.clone();
        old.last_agent = Some(LastAgent {
            agent: AgentId(1),
            served_at: t(-90_000),
        });
        assert_eq!(
            pairs(&run(&snapshot(vec![last.clone(), agent(2)], vec![old], 10))),
            vec![(1, 2)]
        );

        // Sticky agent at capacity: no waiting for them.
        last.load = 3;
        assert_eq!(
            pairs(&run(&snapshot(vec![last, agent(2)], vec![c], 10))),
            vec![(1, 2)]
        );
    }

    #[test]
    fn a_transfer_names_every_unmet_requirement_but_not_optional_ones() {
        let required = [
            SkillRequirement::new("billing").at_least(3),
            SkillRequirement::new("french"),
            SkillRequirement::new("refunds"),
            SkillRequirement::new("vip").optional(),
        ];
        let mut bob = agent(1)
            .with_skill("billing", Some(2))
            .with_skill("refunds", None);
        bob.skills.get_mut("refunds").expect("skill").active = false;
        assert_eq!(
            transfer_skill_gaps(&bob, &required),
            vec![
                Exclusion::LevelTooLow {
                    skill: "billing".into(),
                    level: Some(2),
                    required: 3
                },
                Exclusion::MissingSkill {
                    skill: "french".into()
                },
                Exclusion::InactiveSkill {
                    skill: "refunds".into()
                },
            ]
        );
        let carol = agent(2)
            .with_skill("billing", Some(4))
            .with_skill("french", None)
            .with_skill("refunds", Some(1));
        assert_eq!(transfer_skill_gaps(&carol, &required), vec![]);
    }

    #[test]
    fn only_active_skills_at_the_minimum_level_match() {
        let needs =
            |c: WaitingConversation| c.requiring(SkillRequirement::new("billing").at_least(3));
        let mut inactive = agent(1).with_skill("billing", Some(5));
        inactive.skills.get_mut("billing").expect("skill").active = false;
        let low = agent(2).with_skill("billing", Some(2));
        let unleveled = agent(3).with_skill("billing", None);
        let none = agent(4);
        let good = agent(5).with_skill("billing", Some(3));
        let s = snapshot(
            vec![inactive, low, unleveled, none, good],
            vec![needs(conv(1, 0))],
            10,
        );
        let d = run(&s);
        assert_eq!(pairs(&d), vec![(1, 5)]);
        let reasons: Vec<String> = d[0]
            .explanation
            .considered
            .iter()
            .filter_map(|v| match v {
                Verdict::Excluded { reason, .. } => Some(reason.to_string()),
                Verdict::Ranked { .. } => None,
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                "skill billing is inactive",
                "skill billing at level 2 below 3",
                "skill billing at level none below 3",
                "lacks skill billing",
            ]
        );
    }

    #[test]
    fn widening_relaxes_levels_then_drops_optional_skills() {
        let c = conv(1, 0)
            .requiring(SkillRequirement::new("billing").at_least(4))
            .requiring(SkillRequirement::new("spanish").optional());
        let low = agent(1)
            .with_skill("billing", Some(2))
            .with_skill("spanish", None);
        let no_spanish = agent(2).with_skill("billing", Some(2));
        // Before 120 s: nobody.
        assert!(
            run(&snapshot(
                vec![low.clone(), no_spanish.clone()],
                vec![c.clone()],
                119
            ))
            .is_empty()
        );
        // After 120 s: levels relaxed, spanish still required.
        let d = run(&snapshot(
            vec![low.clone(), no_spanish.clone()],
            vec![c.clone()],
            120,
        ));
        assert_eq!(pairs(&d), vec![(1, 1)]);
        assert_eq!(
            d[0].explanation.widening,
            Widening {
                levels_relaxed: true,
                optional_dropped: false
            }
        );
        // After 300 s: spanish dropped too; agent 2 alone qualifies with agent 1 away.
        let mut away = low;
        away.status = AgentStatus::Away;
        let d = run(&snapshot(vec![away, no_spanish], vec![c], 300));
        assert_eq!(pairs(&d), vec![(1, 2)]);
        assert!(d[0].explanation.widening.optional_dropped);
        assert!(
            d[0].explanation
                .to_string()
                .contains("optional skills dropped")
        );
    }

    #[test]
    fn capacity_is_never_exceeded_and_load_spreads() {
        let mut a = agent(1);
        a.capacity = 1;
        let mut b = agent(2);
        b.capacity = 1;
        let d = run(&snapshot(
            vec![a, b],
            vec![conv(1, 0), conv(2, 1), conv(3, 2)],
            10,
        ));
        assert_eq!(pairs(&d), vec![(1, 1), (2, 2)]);
    }

    #[test]
    fn full_explanation_lists_every_exclusion_kind() {
        let mut away = agent(1);
        away.status = AgentStatus::Away;
        let mut disconnected = agent(2);
        disconnected.connection = Connection::Disconnected { since: t(0) };
        let mut manual = agent(3);
        manual.auto_allocate = false;
        let mut full = agent(4);
        full.load = 3;
        let returner = agent(5);
        let winner = agent(6);
        let mut c = conv(1, 0);
        c.avoid_agent = Some(AgentId(5));
        let d = run(&snapshot(
            vec![away, disconnected, manual, full, returner, winner],
            vec![c],
            10,
        ));
        assert_eq!(pairs(&d), vec![(1, 6)]);
        let considered = &d[0].explanation.considered;
        assert!(matches!(
            considered[0],
            Verdict::Ranked {
                rank: 1,
                facts: CandidateFacts {
                    agent: AgentId(6),
                    ..
                }
            }
        ));
        let reasons: Vec<Exclusion> = considered[1..]
            .iter()
            .map(|v| match v {
                Verdict::Excluded { reason, .. } => reason.clone(),
                Verdict::Ranked { .. } => panic!("only one eligible agent"),
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                Exclusion::NotAvailable {
                    status: AgentStatus::Away
                },
                Exclusion::Disconnected,
                Exclusion::AutoAllocateOff,
                Exclusion::AtCapacity {
                    load: 3,
                    capacity: 3
                },
                Exclusion::ReturnedByAgent,
            ]
        );
        // Serializable for the API and the audit trail.
        let json = serde_json::to_string(&d[0]).expect("serializes");
        assert!(json.contains("returned_by_agent"), "{json}");
    }

    #[test]
    fn pinned_conversations_wait_for_their_agent_only() {
        let mut manual = agent(1);
        manual.auto_allocate = false;
        let mut c = conv(1, 0);
        c.pinned_agent = Some(AgentId(1));
        let d = run(&snapshot(
            vec![manual.clone(), agent(2)],
            vec![c.clone()],
            10,
        ));
        assert_eq!(pairs(&d), vec![(1, 1)]);
        assert_eq!(d[0].explanation.reason, WinReason::Pinned);
        let full = d[0].explanation.considered.iter().any(|v| {
            matches!(
                v,
                Verdict::Excluded {
                    reason: Exclusion::PinnedToOther { agent: AgentId(1) },
                    ..
                }
            )
        });
        assert!(
            full,
            "agent 2 is excluded as the conversation is pinned to agent 1"
        );

        manual.status = AgentStatus::Away;
        assert!(run(&snapshot(vec![manual, agent(2)], vec![c], 10)).is_empty());
    }

    #[test]
    fn pick_checks_every_rule() {
        let c = conv(1, 0).requiring(SkillRequirement::new("billing"));
        let skilled = agent(1).with_skill("billing", None);
        let mut offline = skilled.clone();
        offline.id = AgentId(2);
        offline.status = AgentStatus::Offline;
        let mut full = skilled.clone();
        full.id = AgentId(3);
        full.load = 3;
        let unskilled = agent(4);
        let mut manual = skilled.clone();
        manual.id = AgentId(5);
        manual.auto_allocate = false;
        manual.status = AgentStatus::Away;
        let mut pinned = conv(2, 0);
        pinned.pinned_agent = Some(AgentId(1));
        let s = snapshot(
            vec![skilled, offline, full, unskilled, manual],
            vec![c, pinned],
            10,
        );

        let d = pick(&s, AgentId(1), ConversationId(1)).expect("pick");
        assert_eq!(d.explanation.reason, WinReason::ManualPick);
        assert!(
            pick(&s, AgentId(5), ConversationId(1)).is_ok(),
            "away and manual may pick"
        );
        assert_eq!(
            pick(&s, AgentId(9), ConversationId(1)),
            Err(PickError::UnknownAgent(AgentId(9)))
        );
        assert_eq!(
            pick(&s, AgentId(1), ConversationId(9)),
            Err(PickError::NotWaiting(ConversationId(9)))
        );
        assert_eq!(
            pick(&s, AgentId(2), ConversationId(1)),
            Err(PickError::AgentOffline(AgentId(2)))
        );
        assert_eq!(
            pick(&s, AgentId(3), ConversationId(1)),
            Err(PickError::AgentAtCapacity {
                agent: AgentId(3),
                load: 3,
                capacity: 3
            })
        );
        assert_eq!(
            pick(&s, AgentId(4), ConversationId(1)),
            Err(PickError::AgentLacksSkill {
                agent: AgentId(4),
                reason: Exclusion::MissingSkill {
                    skill: "billing".into()
                }
            })
        );
        assert_eq!(
            pick(&s, AgentId(5), ConversationId(2)),
            Err(PickError::PinnedToOther {
                conversation: ConversationId(2),
                agent: AgentId(1)
            })
        );
    }
}

mod events {
    use super::*;

    fn categories() -> Categories {
        let category = |id: i64, priority: i32, skills: Vec<SkillRequirement>| Category {
            id: CategoryId(id),
            name: format!("c{id}"),
            priority,
            required_skills: skills,
            rules: vec![],
        };
        Categories {
            ordered: vec![
                category(1, 0, vec![SkillRequirement::new("billing")]),
                category(2, 9, vec![]),
            ],
            default: category(0, 0, vec![]),
        }
    }

    fn state(agents: Vec<Agent>) -> RoutingState {
        let mut state = RoutingState::new(RoutingSettings::default(), categories());
        for a in agents {
            state
                .apply(Event::AgentRegistered(a), t(0))
                .expect("register");
        }
        state
    }

    fn arrive(state: &mut RoutingState, id: i64, category: i64, at: i64) -> Vec<(i64, i64)> {
        let arrival = Arrival {
            id: ConversationId(id),
            contact: ContactId(id),
            channel: ChannelType::Sms,
            category: CategoryId(category),
            last_agent: None,
        };
        pairs(
            &state
                .apply(Event::ConversationArrived(arrival), t(at))
                .expect("arrival"),
        )
    }

    fn offline(id: i64) -> Agent {
        let mut a = agent(id);
        a.status = AgentStatus::Offline;
        a
    }

    #[test]
    fn allocation_runs_on_arrival_and_when_an_agent_comes_online() {
        let mut s = state(vec![offline(1)]);
        assert_eq!(arrive(&mut s, 1, 0, 1), vec![]);
        assert_eq!(arrive(&mut s, 2, 0, 2), vec![]);
        let d = s
            .apply(Event::AgentOnline(AgentId(1)), t(3))
            .expect("online");
        assert_eq!(pairs(&d), vec![(1, 1), (2, 1)]);
        assert_eq!(arrive(&mut s, 3, 0, 4), vec![(3, 1)]);
        assert_eq!(arrive(&mut s, 4, 0, 5), vec![], "agent 1 is at capacity 3");
        // Capacity freed: the waiting conversation goes to agent 1.
        let d = s
            .apply(Event::ConversationClosed(ConversationId(1)), t(6))
            .expect("close");
        assert_eq!(pairs(&d), vec![(4, 1)]);
        assert_eq!(
            s.status(ConversationId(1)),
            Some(ConversationStatus::Closed { at: t(6) })
        );
    }

    #[test]
    fn skill_activation_and_auto_allocate_trigger_allocation() {
        let mut a = agent(1).with_skill("billing", None);
        a.skills.get_mut("billing").expect("skill").active = false;
        a.auto_allocate = false;
        let mut s = state(vec![a]);
        assert_eq!(arrive(&mut s, 1, 1, 1), vec![]);
        let toggle = |active| Event::SkillToggled {
            agent: AgentId(1),
            skill: "billing".into(),
            active,
        };
        assert!(
            s.apply(toggle(true), t(2)).expect("toggle").is_empty(),
            "auto-allocate is off"
        );
        let d = s.apply(
            Event::AutoAllocateToggled {
                agent: AgentId(1),
                on: true,
            },
            t(3),
        );
        assert_eq!(pairs(&d.expect("auto on")), vec![(1, 1)]);
        assert_eq!(
            s.apply(
                Event::SkillToggled {
                    agent: AgentId(1),
                    skill: "french".into(),
                    active: true
                },
                t(4)
            ),
            Err(EventError::UnknownSkill {
                agent: AgentId(1),
                skill: "french".into()
            })
        );
    }

    #[test]
    fn disconnect_grace_returns_conversations_at_their_old_place() {
        let mut s = state(vec![agent(1), offline(2)]);
        assert_eq!(arrive(&mut s, 1, 0, 10), vec![(1, 1)]);
        s.apply(Event::AgentDisconnected(AgentId(1)), t(20))
            .expect("disconnect");
        s.apply(Event::AgentDisconnected(AgentId(1)), t(25))
            .expect("a second disconnect keeps the grace");
        assert_eq!(s.next_timer(t(20)), Some(t(80)));
        assert_eq!(
            arrive(&mut s, 2, 0, 30),
            vec![],
            "disconnected agents get nothing new"
        );
        assert_eq!(
            s.apply(Event::GraceExpired(AgentId(1)), t(79)),
            Err(EventError::GraceNotElapsed {
                agent: AgentId(1),
                until: t(80)
            })
        );
        let d = s
            .apply(Event::GraceExpired(AgentId(1)), t(80))
            .expect("expired");
        assert!(d.is_empty());
        let queue: Vec<(i64, DateTime<Utc>)> = s.queue().map(|c| (c.id.0, c.enqueued_at)).collect();
        assert_eq!(
            queue,
            vec![(1, t(10)), (2, t(30))],
            "conversation 1 keeps its place"
        );
        let d = s
            .apply(Event::AgentOnline(AgentId(2)), t(90))
            .expect("online");
        assert_eq!(pairs(&d), vec![(1, 2), (2, 2)]);
    }

    #[test]
    fn reconnecting_inside_the_grace_keeps_conversations() {
        let mut s = state(vec![agent(1)]);
        arrive(&mut s, 1, 0, 0);
        s.apply(Event::AgentDisconnected(AgentId(1)), t(10))
            .expect("disconnect");
        s.apply(Event::AgentReconnected(AgentId(1)), t(20))
            .expect("reconnect");
        assert_eq!(
            s.apply(Event::GraceExpired(AgentId(1)), t(100)),
            Err(EventError::NotDisconnected(AgentId(1)))
        );
        assert_eq!(
            s.assigned_to(AgentId(1)).collect::<Vec<_>>(),
            vec![ConversationId(1)]
        );
    }

    #[test]
    fn registering_an_agent_as_offline_returns_their_conversations() {
        let mut s = state(vec![agent(1), agent(2)]);
        assert_eq!(arrive(&mut s, 1, 0, 0), vec![(1, 1)]);
        let d = s
            .apply(Event::AgentRegistered(offline(1)), t(1))
            .expect("register");
        assert_eq!(pairs(&d), vec![(1, 2)]);
        assert_eq!(s.agent(AgentId(1)).map(|a| a.load), Some(0));
    }

    #[test]
    fn going_offline_returns_conversations_to_other_agents() {
        let mut s = state(vec![agent(1)]);
        arrive(&mut s, 1, 0, 0);
        s.apply(Event::AgentRegistered(agent(2)), t(1))
            .expect("register");
        let d = s
            .apply(Event::AgentOffline(AgentId(1)), t(5))
            .expect("offline");
        assert_eq!(pairs(&d), vec![(1, 2)]);
        assert_eq!(s.agent(AgentId(1)).map(|a| a.load), Some(0));
    }

    #[test]
    fn transfers_unassign_and_reopen() {
        let mut s = state(vec![agent(1), agent(2).with_skill("billing", None)]);
        assert_eq!(arrive(&mut s, 1, 0, 0), vec![(1, 1)]);
        // Unassign: back in the queue, not to agent 1 again.
        let d = s
            .apply(Event::Unassigned(ConversationId(1)), t(1))
            .expect("unassign");
        assert_eq!(pairs(&d), vec![(1, 2)]);
        // Transfer to agent 1 (auto-allocate off does not matter for transfers).
        s.apply(
            Event::AutoAllocateToggled {
                agent: AgentId(1),
                on: false,
            },
            t(2),
        )
        .expect("off");
        let transfer = Event::TransferToAgent {
            conversation: ConversationId(1),
            agent: AgentId(1),
        };
        let d = s.apply(transfer, t(3)).expect("transfer");
        assert_eq!(pairs(&d), vec![(1, 1)]);
        assert_eq!(d[0].explanation.reason, WinReason::Pinned);
        // Transfer to the billing category: needs the billing skill, goes to agent 2.
        let to_billing = Event::TransferToCategory {
            conversation: ConversationId(1),
            category: CategoryId(1),
        };
        let d = s.apply(to_billing, t(4)).expect("transfer to category");
        assert_eq!(pairs(&d), vec![(1, 2)]);
        assert_eq!(
            s.conversation(ConversationId(1)).map(|c| c.enqueued_at),
            Some(t(0))
        );
        // A transfer to an agent lacking the skill is refused.
        assert_eq!(
            s.apply(
                Event::TransferToAgent {
                    conversation: ConversationId(1),
                    agent: AgentId(1)
                },
                t(5)
            ),
            Err(EventError::TransferRejected {
                conversation: ConversationId(1),
                agent: AgentId(1),
                reason: Exclusion::MissingSkill {
                    skill: "billing".into()
                },
            })
        );
        // Close, then the customer writes again: sticky to agent 2 even with agent 3 idle.
        s.apply(Event::ConversationClosed(ConversationId(1)), t(6))
            .expect("close");
        s.apply(
            Event::AgentRegistered(agent(3).with_skill("billing", None)),
            t(7),
        )
        .expect("register");
        arrive(&mut s, 2, 0, 8);
        let d = s
            .apply(Event::Reopened(ConversationId(1)), t(9))
            .expect("reopen");
        assert_eq!(pairs(&d), vec![(1, 2)]);
        assert_eq!(
            d[0].explanation.reason,
            WinReason::Sticky { served_at: t(6) }
        );
        assert_eq!(
            s.apply(Event::Reopened(ConversationId(1)), t(10)),
            Err(EventError::NotClosed(ConversationId(1)))
        );
    }

    #[test]
    fn a_new_conversation_of_a_known_contact_is_sticky() {
        let mut s = state(vec![agent(1), agent(2)]);
        assert_eq!(arrive(&mut s, 1, 0, 0), vec![(1, 1)]);
        s.apply(Event::ConversationClosed(ConversationId(1)), t(5))
            .expect("close");
        arrive(&mut s, 2, 0, 6);
        // Contact 1 again (conversation 3 for contact 1).
        let arrival = Arrival {
            id: ConversationId(3),
            contact: ContactId(1),
            channel: ChannelType::Sms,
            category: CategoryId(0),
            last_agent: None,
        };
        let d = s
            .apply(Event::ConversationArrived(arrival), t(7))
            .expect("arrival");
        assert_eq!(pairs(&d), vec![(3, 1)]);
        assert!(matches!(d[0].explanation.reason, WinReason::Sticky { .. }));
    }

    #[test]
    fn why_a_conversation_is_still_waiting() {
        let mut s = state(vec![agent(1), agent(2).with_skill("billing", None)]);
        s.apply(Event::AgentAway(AgentId(2)), t(0)).expect("away");
        assert_eq!(arrive(&mut s, 1, 1, 1), vec![]);
        let verdicts = s.why_waiting(ConversationId(1)).expect("waiting");
        assert_eq!(
            verdicts,
            vec![
                Verdict::Excluded {
                    agent: AgentId(1),
                    reason: Exclusion::MissingSkill {
                        skill: "billing".into()
                    }
                },
                Verdict::Excluded {
                    agent: AgentId(2),
                    reason: Exclusion::NotAvailable {
                        status: AgentStatus::Away
                    }
                },
            ]
        );
        let snapshot = s.snapshot(t(1));
        assert_eq!(why_waiting(&snapshot, ConversationId(1)), Some(verdicts));
        s.apply(Event::AgentOnline(AgentId(2)), t(2))
            .expect("online");
        assert_eq!(s.why_waiting(ConversationId(1)), None);
    }

    #[test]
    fn picks_in_the_state() {
        let mut s = state(vec![offline(1), agent(2)]);
        s.apply(
            Event::AutoAllocateToggled {
                agent: AgentId(2),
                on: false,
            },
            t(0),
        )
        .expect("off");
        arrive(&mut s, 1, 0, 0);
        let d = s.pick(AgentId(2), ConversationId(1), t(1)).expect("pick");
        assert_eq!(d.explanation.reason, WinReason::ManualPick);
        assert_eq!(
            s.pick(AgentId(2), ConversationId(1), t(2)),
            Err(PickError::AlreadyAssigned {
                conversation: ConversationId(1),
                agent: AgentId(2)
            })
        );
        s.apply(Event::ConversationClosed(ConversationId(1)), t(3))
            .expect("close");
        assert_eq!(
            s.pick(AgentId(2), ConversationId(1), t(4)),
            Err(PickError::Closed(ConversationId(1)))
        );
        assert_eq!(
            s.pick(AgentId(2), ConversationId(7), t(4)),
            Err(PickError::UnknownConversation(ConversationId(7)))
        );
    }

    #[test]
    fn tick_applies_widening_as_time_passes() {
        let mut cats = categories();
        cats.ordered[0].required_skills = vec![SkillRequirement::new("billing").optional()];
        let mut s = RoutingState::new(RoutingSettings::default(), cats);
        s.apply(Event::AgentRegistered(agent(1)), t(0))
            .expect("register");
        assert_eq!(arrive(&mut s, 1, 1, 0), vec![]);
        assert_eq!(
            s.next_timer(t(1)),
            Some(t(120)),
            "the level threshold wakes it too"
        );
        assert!(s.apply(Event::Tick, t(299)).expect("tick").is_empty());
        assert_eq!(
            pairs(&s.apply(Event::Tick, t(300)).expect("tick")),
            vec![(1, 1)]
        );
    }

    #[test]
    fn errors_leave_the_state_unchanged() {
        let mut s = state(vec![agent(1)]);
        arrive(&mut s, 1, 0, 0);
        let unknown = Arrival {
            id: ConversationId(2),
            contact: ContactId(2),
            channel: ChannelType::Sms,
            category: CategoryId(42),
            last_agent: None,
        };
        assert_eq!(
            s.apply(Event::ConversationArrived(unknown), t(1)),
            Err(EventError::UnknownCategory(CategoryId(42)))
        );
        assert_eq!(s.status(ConversationId(2)), None);
        assert_eq!(
            s.apply(Event::AgentOnline(AgentId(5)), t(1)),
            Err(EventError::UnknownAgent(AgentId(5)))
        );
        assert_eq!(
            s.apply(Event::Unassigned(ConversationId(9)), t(1)),
            Err(EventError::UnknownConversation(ConversationId(9)))
        );
    }

    #[test]
    fn restore_rebuilds_loads_and_queue_without_allocating() {
        let mut s = state(vec![agent(1), agent(2)]);
        s.restore(
            conv(1, 5),
            ConversationStatus::Assigned {
                agent: AgentId(1),
                since: t(6),
            },
        );
        s.restore(conv(2, 7), ConversationStatus::Waiting);
        s.restore(conv(3, 1), ConversationStatus::Closed { at: t(2) });
        assert_eq!(s.agent(AgentId(1)).map(|a| a.load), Some(1));
        assert_eq!(
            s.agent(AgentId(1)).and_then(|a| a.last_assigned_at),
            Some(t(6))
        );
        assert_eq!(s.queue().map(|c| c.id.0).collect::<Vec<_>>(), vec![2]);
        // Restoring the assigned one as waiting again moves it back and frees the load.
        s.restore(conv(1, 5), ConversationStatus::Waiting);
        assert_eq!(s.agent(AgentId(1)).map(|a| a.load), Some(0));
        assert_eq!(s.queue().map(|c| c.id.0).collect::<Vec<_>>(), vec![1, 2]);
        // The sweep then allocates both; agent 2 never had one, so is idle longest and goes first.
        assert_eq!(
            pairs(&s.apply(Event::Tick, t(10)).expect("tick")),
            vec![(1, 2), (2, 1)]
        );
    }

    #[test]
    fn an_assignment_made_elsewhere_moves_load_and_refills_the_agent_it_left() {
        let mut one = agent(1);
        one.capacity = 1;
        let mut s = state(vec![one, offline(2)]);
        assert_eq!(arrive(&mut s, 1, 0, 1), vec![(1, 1)]);
        assert_eq!(arrive(&mut s, 2, 0, 2), vec![], "agent 1 is full");
        // A manual pick by agent 2 (offline for automatic routing) of conversation 1, made on
        // another replica: agent 1 is freed and takes the waiting conversation 2.
        let d = s
            .assigned_elsewhere(ConversationId(1), AgentId(2), t(3))
            .expect("known conversation");
        assert_eq!(pairs(&d), vec![(2, 1)]);
        assert_eq!(
            s.status(ConversationId(1)),
            Some(ConversationStatus::Assigned {
                agent: AgentId(2),
                since: t(3)
            })
        );
        assert_eq!(s.agent(AgentId(2)).map(|a| a.load), Some(1));
        assert_eq!(s.agent(AgentId(1)).map(|a| a.load), Some(1));
        // Repeating it changes nothing; an unknown conversation is refused.
        assert!(
            s.assigned_elsewhere(ConversationId(1), AgentId(2), t(4))
                .expect("same")
                .is_empty()
        );
        assert_eq!(
            s.assigned_elsewhere(ConversationId(9), AgentId(2), t(4)),
            Err(EventError::UnknownConversation(ConversationId(9)))
        );
    }
}
