//! The network's keys (producer, bootnode, control token): created once into a Secret, read back
//! on every reconcile; and the seed of its fault schedule.

use super::*;

/// The network's Secret, made once: regenerating keys would fork the chain.
pub(super) async fn ensure_keys(sn: &SyncNetwork, ctx: &Context) -> Result<(Keys, String), Error> {
    let ns = sn.namespace().unwrap_or_else(|| "default".into());
    let name = render::secret_name(&sn.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = match api.get_opt(&name).await? {
        Some(s) => s,
        None => {
            let producer = syncnet_proto::keys::generate();
            let boot = syncnet_proto::keys::generate();
            let token = hex::encode(syncnet_proto::keys::generate().to_bytes());
            let data = BTreeMap::from([
                (
                    render::PRODUCER_KEY.to_owned(),
                    syncnet_proto::keys::encode(&producer, "producer"),
                ),
                (
                    render::BOOTNODE_KEY.to_owned(),
                    syncnet_proto::keys::encode(&boot, "node"),
                ),
                (render::CONTROL_TOKEN.to_owned(), token),
            ]);
            let s = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(render::network_labels(&sn.name_any())),
                    owner_references: sn.controller_owner_ref(&()).map(|o| vec![o]),
                    ..Default::default()
                },
                string_data: Some(data),
                ..Secret::default()
            };
            let made = api.create(&PostParams::default(), &s).await?;
            info!(secret = %name, "created the network's keys");
            // The API answers with `data` (base64); a mocked one may echo `stringData`.
            if made.data.is_some() { made } else { s }
        }
    };
    let get = |key: &str| -> Result<String, Error> {
        if let Some(b) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(b.0.clone())
                .map_err(|_| Error::Secret(name.clone(), format!("{key} is not UTF-8")));
        }
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
            .ok_or_else(|| Error::Secret(name.clone(), format!("{key} is missing")))
    };
    let producer = syncnet_proto::keys::parse(&get(render::PRODUCER_KEY)?, render::PRODUCER_KEY)
        .map_err(|e| Error::Secret(name.clone(), e))?;
    let boot = syncnet_proto::keys::parse(&get(render::BOOTNODE_KEY)?, render::BOOTNODE_KEY)
        .map_err(|e| Error::Secret(name.clone(), e))?;
    let token = get(render::CONTROL_TOKEN)?.trim().to_owned();
    Ok((
        Keys {
            producer_public: syncnet_proto::keys::public_key(&producer),
            bootnode_peer_id: syncnet_proto::keys::peer_id(&boot).to_string(),
        },
        token,
    ))
}

/// The fault schedule's seed: the resource's uid, so every operator replica and restart agrees.
pub fn seed(sn: &SyncNetwork) -> u64 {
    let uid = sn.uid().unwrap_or_default();
    let h = blake3::hash(uid.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}
