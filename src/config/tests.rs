use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn shipped_file_is_the_default() {
    let c = Config::defaults();
    assert_eq!(c.amqp.port, 5672);
    assert_eq!(c.admin.port, 15672);
    assert_eq!(c.metrics.port, 15692);
    assert_eq!(c.auth.default_user, "guest");
    assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
    assert_eq!(c.limits.channel_max, 2047);
    for bind in [&c.amqp.bind, &c.admin.bind, &c.metrics.bind] {
        assert_eq!(bind, &["::"], "dual-stack by default, as RabbitMQ");
    }
    assert!(c.amqp.enabled && !c.amqps.enabled);
    assert_eq!(c.amqps.port, 5671);
    assert!(!c.audit.enabled);
}

#[test]
fn bind_takes_one_address_or_a_list() {
    let c = Config::load(
        &Overrides::default(),
        env(&[
            ("WARREN_AMQP__BIND", "127.0.0.1"),
            ("WARREN_ADMIN__BIND", r#"["127.0.0.1", "::1"]"#),
        ]),
    )
    .unwrap();
    assert_eq!(c.amqp.bind, ["127.0.0.1"]);
    assert_eq!(c.admin.bind, ["127.0.0.1", "::1"]);
    let e = Config::load(&Overrides::default(), env(&[("WARREN_AMQP__BIND", "[]")])).unwrap_err();
    assert!(e.to_string().contains("amqp.bind"), "{e}");
}

#[test]
fn server_properties_can_be_overridden() {
    let c = Config::defaults();
    assert_eq!(c.server_properties.product, "RabbitMQ");
    let c = Config::load(
        &Overrides::default(),
        env(&[
            ("WARREN_SERVER_PROPERTIES__PRODUCT", "Warren"),
            ("WARREN_SERVER_PROPERTIES__VERSION", "3.13.7"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server_properties.product, "Warren");
    assert_eq!(c.server_properties.version, "3.13.7");
}

#[test]
fn tls_flags_turn_amqps_on_and_need_certificates() {
    let overrides = Overrides {
        amqps_port: Some(5999),
        ..Default::default()
    };
    let e = Config::load(&overrides, std::iter::empty()).unwrap_err();
    assert!(e.to_string().contains("tls.cert"), "{e}");
    let overrides = Overrides {
        amqps_port: Some(5999),
        tls_cert: Some("c.pem".into()),
        tls_key: Some("k.pem".into()),
        tls_ca: Some("ca.pem".into()),
        tls_verify_peer: true,
        ..Default::default()
    };
    let c = Config::load(&overrides, std::iter::empty()).unwrap();
    assert!(c.amqps.enabled && c.tls.verify_peer && c.tls.fail_if_no_peer_cert);
    assert_eq!(c.amqps.port, 5999);
    let c = Config::load(
        &Overrides::default(),
        env(&[
            ("WARREN_AMQPS__ENABLED", "true"),
            ("WARREN_TLS__CERT", "/c.pem"),
            ("WARREN_TLS__KEY", "/k.pem"),
            ("WARREN_AMQP__ENABLED", "false"),
        ]),
    )
    .unwrap();
    assert!(!c.amqp.enabled && c.amqps.enabled);
    assert_eq!(c.tls.cert, PathBuf::from("/c.pem"));
}

#[test]
fn max_message_size_is_capped_at_rabbitmqs_ceiling() {
    let e = Config::load(
        &Overrides::default(),
        env(&[("WARREN_LIMITS__MAX_MESSAGE_SIZE", "536870913")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("512 MiB"), "{e}");
}

#[test]
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warren.toml");
    std::fs::write(&file, "[amqp]\nport = 1111\n[limits]\nheartbeat = 5\n").unwrap();
    let overrides = Overrides {
        config_file: Some(file),
        admin_port: Some(3333),
        ..Default::default()
    };
    let c = Config::load(
        &overrides,
        env(&[
            ("WARREN_LIMITS__HEARTBEAT", "7"),
            ("WARREN_ADMIN__PORT", "2222"),
            ("RABBITMQ_DEFAULT_USER", "rabbit"),
            ("RABBITMQ_DEFAULT_PASS", "secret"),
            ("WARREN_DEFAULT_PASS", "wins"),
        ]),
    )
    .unwrap();
    assert_eq!(c.amqp.port, 1111);
    assert_eq!(c.limits.heartbeat, 7);
    assert_eq!(c.admin.port, 3333);
    assert_eq!(c.auth.default_user, "rabbit");
    assert_eq!(c.auth.default_pass, "wins");
}

#[test]
fn environment_values_may_be_toml_arrays() {
    // The Docker image lets guest in from anywhere this way.
    let c = Config::load(
        &Overrides::default(),
        env(&[("WARREN_AUTH__LOOPBACK_USERS", "[]")]),
    )
    .unwrap();
    assert!(c.auth.loopback_users.is_empty());
    let c = Config::load(
        &Overrides::default(),
        env(&[("WARREN_STORAGE__DATA_DIR", "/var/lib/x")]),
    )
    .unwrap();
    assert_eq!(c.storage.data_dir, PathBuf::from("/var/lib/x"));
}

#[test]
fn watermarks_are_fractions_or_sizes() {
    let c = Config::defaults();
    assert_eq!(
        c.limits.memory_high_watermark.watermark(),
        Ok(MemoryWatermark::Fraction(0.6))
    );
    assert_eq!(c.limits.disk_free_limit.bytes(), Ok(50_000_000));
    let c = Config::load(
        &Overrides {
            memory_high_watermark: Some("512MiB".into()),
            disk_free_limit: Some("1GiB".into()),
            ..Default::default()
        },
        env(&[]),
    )
    .unwrap();
    assert_eq!(
        c.limits.memory_high_watermark.watermark(),
        Ok(MemoryWatermark::Bytes(512 << 20))
    );
    assert_eq!(c.limits.disk_free_limit.bytes(), Ok(1 << 30));
    let c = Config::load(
        &Overrides::default(),
        env(&[("WARREN_LIMITS__MEMORY_HIGH_WATERMARK", "0.4")]),
    )
    .unwrap();
    assert_eq!(
        c.limits.memory_high_watermark.watermark(),
        Ok(MemoryWatermark::Fraction(0.4))
    );
    let e = Config::load(
        &Overrides {
            disk_free_limit: Some("lots".into()),
            ..Default::default()
        },
        env(&[]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("disk_free_limit"), "{e}");
}

#[test]
fn unknown_keys_and_bad_values_are_reported() {
    let e = Config::load(&Overrides::default(), env(&[("WARREN_AMQP__PROT", "1")])).unwrap_err();
    assert!(e.to_string().contains("prot"), "{e}");
    let e = Config::load(
        &Overrides::default(),
        env(&[("WARREN_AMQP__BIND", "nowhere")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("nowhere"), "{e}");
}
