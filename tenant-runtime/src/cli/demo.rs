//! `contact-runtime demo`: the runtime on an embedded SQLite file plus the simulator, seeded with
//! an admin, two agents, a DPO, skills and categories, and instructions for playing a customer.

use std::net::SocketAddr;

use clap::Args;

use crate::app::{Application, shutdown_signal};
use crate::channels::simulator::{SimSettings, Simulator};
use crate::config::{ChannelApp, Region, Secret, Settings};
use crate::domain::api::{NewCategory, NewSkill, NewUser};
use crate::domain::{ChannelType, Role};
use crate::storage::Store;

/// Demo options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Runtime address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Simulator address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub simulator_listen: SocketAddr,
    /// Database (kept between runs).
    #[arg(long, default_value = "sqlite:contact-demo.sqlite")]
    pub database_url: String,
}

/// The API token the demo uses.
pub(crate) const DEMO_TOKEN: &str = "demo-token";
/// The password of every seeded demo user.
pub(crate) const DEMO_PASSWORD: &str = "contact-demo";

/// Settings of the demo runtime talking to a simulator at `sim`.
pub(crate) fn demo_settings(args: &DemoArgs) -> Settings {
    let sim = format!("http://{}", args.simulator_listen);
    let app = |name: &str, channel: ChannelType, category: Option<&str>| ChannelApp {
        name: name.to_owned(),
        channel,
        region: Region::Eu,
        project_id: "demo-project".to_owned(),
        app_id: format!("DEMOAPP{}", channel.as_str()),
        key_id: "demo-key".to_owned(),
        key_secret: Secret("demo-key-secret".to_owned()),
        webhook_secret: Secret(format!("{name}-webhook-secret")),
        base_url: Some(sim.clone()),
        key_id_file: None,
        key_secret_file: None,
        webhook_secret_file: None,
        category: category.map(str::to_owned),
    };
    let mut settings = Settings {
        listen: args.listen,
        database_url: args.database_url.clone(),
        api_token: Some(Secret(DEMO_TOKEN.to_owned())),
        channels: vec![
            app("whatsapp-demo", ChannelType::Whatsapp, None),
            app("sms-demo", ChannelType::Sms, Some("Billing")),
            app("messenger-demo", ChannelType::Messenger, Some("Technical")),
        ],
        ..Settings::default()
    };
    settings.sinch.auth_url = format!("{sim}/oauth2/token");
    settings
}

/// Seeds users, skills and categories once (a second run finds them and does nothing).
pub(super) async fn seed(store: &Store) -> anyhow::Result<()> {
    if !store.users().await?.is_empty() {
        return Ok(());
    }
    let english = store
        .create_skill(&NewSkill {
            name: "english".into(),
        })
        .await?;
    let german = store
        .create_skill(&NewSkill {
            name: "german".into(),
        })
        .await?;
    let billing = store
        .create_skill(&NewSkill {
            name: "billing".into(),
        })
        .await?;
    store
        .create_category(&NewCategory {
            name: "Billing".into(),
            description: "Invoices, refunds and payments".into(),
            skill_ids: vec![billing.id.clone()],
        })
        .await?;
    store
        .create_category(&NewCategory {
            name: "Technical".into(),
            description: "Something does not work".into(),
            skill_ids: vec![],
        })
        .await?;
    let password_hash = crate::http::auth::password::hash(DEMO_PASSWORD);
    let user = |email: &str, name: &str, role: Role, skills: Vec<String>| NewUser {
        email: email.to_owned(),
        display_name: name.to_owned(),
        role,
        password_hash: password_hash.clone(),
        skill_ids: skills,
    };
    store
        .create_user(&user(
            "admin@demo.contact",
            "Ada Admin",
            Role::Admin,
            vec![],
        ))
        .await?;
    store
        .create_user(&user(
            "alice@demo.contact",
            "Alice Agent",
            Role::Agent,
            vec![english.id.clone(), billing.id],
        ))
        .await?;
    store
        .create_user(&user(
            "bob@demo.contact",
            "Bob Agent",
            Role::Agent,
            vec![english.id, german.id],
        ))
        .await?;
    store
        .create_user(&user("dpo@demo.contact", "Dana DPO", Role::Dpo, vec![]))
        .await?;
    Ok(())
}

/// Runs the demo until Ctrl-C.
pub(super) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let settings = demo_settings(&args);
    let runtime_url = format!("http://{}", args.listen);
    let sim_settings = SimSettings::for_runtime(&settings, args.simulator_listen, &runtime_url);
    let app = Application::build(settings).await?;
    seed(app.store()).await?;
    let sim = Simulator::bind(sim_settings).await?;
    let sim_url = format!("http://{}", sim.local_addr());
    let sim_task = tokio::spawn(sim.run_until(shutdown_signal()));
    println!(
        r#"
Contact demo is running (data in {db}).

  Runtime    {runtime_url}   API token: {DEMO_TOKEN}
             OpenAPI: {runtime_url}/api/v1/openapi.json   metrics: {runtime_url}/metrics
  Simulator  {sim_url}   (plays the Sinch Conversation API)

  Web UI     {runtime_url}/   sign in as alice@demo.contact or bob@demo.contact (agents),
             admin@demo.contact (admin) or dpo@demo.contact (data protection officer),
             password {DEMO_PASSWORD}

  Play a customer on WhatsApp:
    curl -s -X POST {sim_url}/_sim/inbound -H 'content-type: application/json' \
      -d '{{"channel":"whatsapp-demo","identity":"46701234567","text":"Hi, where is my parcel?"}}'

  See the queue:
    curl -s -H 'authorization: Bearer {DEMO_TOKEN}' '{runtime_url}/api/v1/conversations?status=queued'

  Answer (use the conversation id from above):
    curl -s -X POST -H 'authorization: Bearer {DEMO_TOKEN}' -H 'content-type: application/json' \
      {runtime_url}/api/v1/conversations/CONVERSATION_ID/messages \
      -d '{{"content":{{"type":"text","text":"It is on its way!"}}}}'

  What the customer received:   curl -s {sim_url}/_sim/sent
  Other channels: sms-demo, messenger-demo. Stop with Ctrl-C.
"#,
        db = args.database_url,
    );
    app.run_until(shutdown_signal()).await?;
    sim_task.abort();
    Ok(())
}
