//! Folders (issue 15): names are paths; a folder lists one level, page by
//! page, merged from every server; one path is a file or a folder, never both.

use ringdfs::client::{no_progress, DirItem};
use ringdfs::error::Error;

use crate::util::{random_file, Cluster};

/// The entries of `folder` as `ls` names them: files by path, folders with
/// a trailing `/`.
pub(crate) async fn ls(client: &ringdfs::client::Client, folder: &str) -> Vec<String> {
    client
        .list_dir(folder)
        .await
        .unwrap()
        .iter()
        .map(|item| match item {
            DirItem::File(f) => f.name.clone(),
            DirItem::Folder(p) => format!("{p}/"),
        })
        .collect()
}

/// A tree three levels deep round-trips file by file, and each level
/// lists exactly its own files and sub-folders; a folder whose files were
/// all deleted is gone from its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_tree_round_trips_and_each_level_lists_exactly_its_entries() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let names = [
        "top.txt",
        "docs/plan.txt",
        "docs/2026/jan.txt",
        "docs/2026/feb.txt",
        "docs/2026/q1/summary.txt",
        "photos/cat.jpg",
    ];
    let mut data = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (path, bytes) = random_file(work.path(), &format!("f{i}"), 1000 + i * 40_000);
        client.put(&path, name, &no_progress).await.unwrap();
        data.push(bytes);
    }
    for (name, bytes) in names.iter().zip(&data) {
        let out = work.path().join("out");
        client.get(name, &out, &no_progress).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == *bytes, "{name}");
    }
    assert_eq!(ls(&client, "").await, ["docs/", "photos/", "top.txt"]);
    assert_eq!(ls(&client, "docs").await, ["docs/2026/", "docs/plan.txt"]);
    assert_eq!(
        ls(&client, "docs/2026").await,
        ["docs/2026/feb.txt", "docs/2026/jan.txt", "docs/2026/q1/"]
    );
    assert_eq!(
        ls(&client, "docs/2026/q1").await,
        ["docs/2026/q1/summary.txt"]
    );
    assert!(ls(&client, "nothing").await.is_empty());

    client.delete("photos/cat.jpg").await.unwrap();
    assert_eq!(ls(&client, "").await, ["docs/", "top.txt"]);
}

/// A file where a folder is (or a folder where a file is) is refused with
/// one clear line, and nothing stored changes; so are malformed paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_is_a_file_or_a_folder_never_both() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, bytes) = random_file(work.path(), "f", 5000);
    client.put(&path, "report", &no_progress).await.unwrap();
    client
        .put(&path, "docs/plan.txt", &no_progress)
        .await
        .unwrap();

    let under_a_file = client
        .put(&path, "report/draft", &no_progress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        under_a_file.contains("report is a file, not a folder"),
        "{under_a_file}"
    );
    let over_a_folder = client
        .put(&path, "docs", &no_progress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        over_a_folder.contains("docs is a folder"),
        "{over_a_folder}"
    );
    assert!(!over_a_folder.contains('\n'), "{over_a_folder}");
    for bad in ["a//b", "a/", "/a", "a/../b", "a/./b"] {
        let e = client.put(&path, bad, &no_progress).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{bad}: {e}");
    }
    assert_eq!(ls(&client, "").await, ["docs/", "report"]);
    assert_eq!(ls(&client, "docs").await, ["docs/plan.txt"]);
    let out = work.path().join("out");
    client.get("report", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes);
}

/// `mkdir` makes an empty folder that lists (and stays, empty) until
/// `rmdir`; `rmdir` refuses a folder with files, `mkdir` a path that is a
/// file or a folder already; a file cannot take a made folder's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_and_rmdir_make_and_remove_empty_folders_only() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, _) = random_file(work.path(), "f", 3000);
    client.put(&path, "report", &no_progress).await.unwrap();

    client.folder("empty", true).await.unwrap();
    client.folder("deep/er/still", true).await.unwrap();
    assert_eq!(ls(&client, "").await, ["deep/", "empty/", "report"]);
    assert!(ls(&client, "empty").await.is_empty());
    assert_eq!(ls(&client, "deep/er").await, ["deep/er/still/"]);
    // Names are files or folders, never both.
    for (path_, why) in [
        ("empty", "empty exists"),
        ("report", "report is a file"),
        ("report/sub", "report is a file, not a folder"),
    ] {
        let e = client.folder(path_, true).await.unwrap_err().to_string();
        assert!(e.contains(why), "mkdir {path_}: {e}");
    }
    for bad in ["a//b", "/", "a/..", "x/"] {
        let e = client.folder(bad, true).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "mkdir {bad}: {e}");
    }
    let e = client.put(&path, "empty", &no_progress).await.unwrap_err();
    assert!(e.to_string().contains("empty is a folder"), "{e}");

    client
        .put(&path, "empty/now-full", &no_progress)
        .await
        .unwrap();
    let e = client.folder("empty", false).await.unwrap_err().to_string();
    assert!(e.contains("empty is not empty"), "{e}");
    client.delete("empty/now-full").await.unwrap();
    client.folder("empty", false).await.unwrap();
    client.folder("deep/er/still", false).await.unwrap();
    assert_eq!(ls(&client, "").await, ["report"]);
    let e = client.folder("empty", false).await.unwrap_err();
    assert!(
        matches!(e, Error::Remote { .. } | Error::NotFound { .. }),
        "{e}"
    );
    // A made folder is not a file: LIST -R and the flat list never show it.
    assert_eq!(
        client
            .list()
            .await
            .unwrap()
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["report"]
    );
}
