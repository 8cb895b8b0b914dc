//! Removes nodes that do nothing at inference time (Identity; Dropout maps to Identity).

use crate::ir::graph::Graph;
use crate::ir::op::Op;

pub fn remove_identities(g: &mut Graph) {
    let producers = g.producers();
    let mut dead = vec![false; g.nodes.len()];
    for n in 0..g.nodes.len() {
        if g.nodes[n].op != Op::Identity || g.nodes[n].outputs.len() != 1 {
            continue;
        }
        let Some(x) = g.nodes[n].input(0) else { continue };
        let y = g.nodes[n].outputs[0];
        let y_is_output = g.outputs.contains(&y);
        if !y_is_output {
            g.replace_uses(y, x);
            dead[n] = true;
        } else if let (Some(p), false) = (producers[x], g.outputs.contains(&x) || dead[producers[x].unwrap_or(n)]) {
            // x -> Identity -> graph output y: let x's producer write y directly.
            g.replace_uses(x, y);
            for o in &mut g.nodes[p].outputs {
                if *o == x {
                    *o = y;
                }
            }
            dead[n] = true;
        } else if g.values[x].constant.is_some() {
            g.values[y].constant = g.values[x].constant.clone();
            g.values[y].dtype = g.values[x].dtype;
            g.values[y].shape = g.values[x].shape.clone();
            dead[n] = true;
        }
    }
    let mut d = dead.into_iter();
    g.nodes.retain(|_| !d.next().unwrap_or(false));
}
