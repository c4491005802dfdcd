//! What a pack author's own test looks like: the pack's classes run through the public
//! harness, without a server or a workflow.

use comfyrs::node::Value;
use comfyrs::testing::NodeHarness;

#[test]
fn joins_the_connected_texts_with_the_chosen_delimiter() {
    let mut h = NodeHarness::new(&[comfyrs_pack_jps::register]).unwrap();
    let out = h
        .run(
            "Text Concatenate (JPS)",
            [
                ("delimiter", Value::String("comma".into())),
                ("text1", Value::String("a".into())),
                ("text3", Value::String("b".into())),
            ],
        )
        .unwrap();
    assert_eq!(out.values.len(), 1);
    assert!(matches!(&out.values[0], Value::String(s) if s == "a, b"));
    let info = h.object_info("Text Concatenate (JPS)").unwrap();
    assert_eq!(info["python_module"], "custom_nodes.ComfyUI_JPS-Nodes");
}
