//! The dump capture with a real PostgreSQL on loopback: `pg_dumpall --clean --if-exists` as
//! Immich's backup takes it, drilled, and loaded into a fresh cluster.

mod common;

use common::{Lab, Postgres, require, stdout};

#[test]
fn postgres_dump_is_captured_drilled_and_loads_into_a_fresh_cluster() {
    if !require(&["kopia", "initdb", "pg_ctl", "pg_dumpall", "psql"]) {
        return;
    }
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE immich");
    pg.psql(
        "immich",
        "CREATE TABLE assets (id serial PRIMARY KEY, path text NOT NULL);
         INSERT INTO assets (path) SELECT 'upload/' || g || '.jpg' FROM generate_series(1, 1234) g;
         CREATE TABLE albums (id serial PRIMARY KEY, name text);
         INSERT INTO albums (name) VALUES ('holiday'), ('family');",
    );

    let lab = Lab::new();
    let immich = lab.source_dir("immich");
    std::fs::create_dir_all(immich.join("library/admin")).expect("dir");
    std::fs::write(immich.join("library/admin/a.jpg"), "jpeg").expect("file");
    std::fs::create_dir_all(immich.join("postgres")).expect("dir");
    std::fs::write(immich.join("postgres/PG_VERSION"), "15").expect("live data dir");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"immich\"\npath = \"{}\"\nexclude = [\"/postgres/\"]\n\
             [source.dump]\nfile = \"immich.sql\"\n\
             command = [\"pg_dumpall\", \"-h\", \"127.0.0.1\", \"-p\", \"{}\", \"-U\", \"postgres\", \"--clean\", \"--if-exists\"]\n\
             complete-marker = \"-- PostgreSQL database cluster dump complete\"\n",
            immich.display(),
            pg.port
        ),
    );
    let out = lab.backup(&config, &["run"]);
    assert_eq!(out.status.code(), Some(0));

    let restored = lab.path("drill");
    let out = lab.backup(&config, &["drill", "--keep", &restored.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("immich.sql"), "{}", stdout(&out));
    let dump = restored.join("immich/.homelab-backup/immich.sql");
    assert!(restored.join("immich/library/admin/a.jpg").exists());
    assert!(
        !restored.join("immich/postgres").exists(),
        "live database files are not snapshotted"
    );

    let fresh = Postgres::start();
    let errors = fresh.psql_file(&dump);
    let unexpected: Vec<&String> = errors
        .iter()
        .filter(|e| {
            !e.contains("current user cannot be dropped")
                && !e.contains("role \"postgres\" already exists")
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "loading the dump failed: {unexpected:?}"
    );
    assert_eq!(fresh.psql("immich", "SELECT count(*) FROM assets"), "1234");
    assert_eq!(fresh.psql("immich", "SELECT count(*) FROM albums"), "2");
    assert_eq!(
        fresh.psql("immich", "SELECT path FROM assets WHERE id = 1234"),
        "upload/1234.jpg"
    );
}
