// dot4(a, b): dot product of two u32s each holding four int8 lanes, as i32. This variant uses
// the WGSL builtin from the packed_4x8_integer_dot_product language extension; naga emits
// SPIR-V OpSDot where the device enables integer dot products, else its own unpacking.
fn dot4(a: u32, b: u32) -> i32 {
    return dot4I8Packed(a, b);
}
