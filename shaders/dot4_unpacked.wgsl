// dot4(a, b): dot product of two u32s each holding four int8 lanes, as i32, unpacked by hand
// (sign-extending shifts) for implementations without packed_4x8_integer_dot_product.
fn dot4(a: u32, b: u32) -> i32 {
    let sa = bitcast<i32>(a);
    let sb = bitcast<i32>(b);
    let x = vec4<i32>((sa << 24u) >> 24u, (sa << 16u) >> 24u, (sa << 8u) >> 24u, sa >> 24u);
    let y = vec4<i32>((sb << 24u) >> 24u, (sb << 16u) >> 24u, (sb << 8u) >> 24u, sb >> 24u);
    return dot(x, y);
}
