package dev.alembic;

/**
 * The JNI surface of libalembic_ffi (src/ffi/jni.rs), one method per C ABI entry point. Every
 * method returns an AlembicStatus code (0 = ok); the message of a failure is {@link #lastError()}
 * on the same thread. Kept in Java so the host JVM test (tests/jvm) compiles the very same
 * declarations without a Kotlin compiler. Apps use the Kotlin API in Alembic.kt instead.
 */
public final class NativeLib {
    private NativeLib() {}

    static {
        System.loadLibrary("alembic_ffi");
    }

    public static native String version();

    public static native String lastError();

    /** out[0] receives the model handle. */
    public static native int modelLoad(String path, long[] out);

    public static native void modelFree(long model);

    /** backend: "cpu", "wgpu" or null; out[0] receives the session handle. */
    public static native int sessionNew(long model, String backend, long[] out);

    /**
     * precision: "f32" (or null), "f16", "int8", "int4", "w8a8"; threads: the most CPU threads
     * one run uses (0: the default); out[0] receives the session handle.
     */
    public static native int sessionNewWith(long model, String backend, String precision, int threads, long[] out);

    public static native void sessionFree(long session);

    /** result[0] receives the output float[], result[1] its long[] shape. */
    public static native int sessionRun(long session, String inputName, float[] data, long[] shape, Object[] result);

    /** count[0] receives the number of inputs (outputs false) or outputs (true). */
    public static native int sessionIoCount(long session, boolean outputs, int[] count);

    /**
     * Input or output index: name[0], dtype[0] (an AlembicDType code = ONNX TensorProto.DataType, 0 when
     * unknown) and shape[0] (-1 for symbolic dimensions; null when not even the rank is known).
     */
    public static native int sessionIoInfo(long session, boolean outputs, int index, String[] name, int[] dtype,
            long[][] shape);

    /**
     * Runs with several inputs, given as parallel arrays. data[i] is a float[] for F32 (1), double[] for F64 (11),
     * and a long[], int[], short[] or byte[] for the other 8-, 4-, 2- and 1-byte types (F16/BF16 as bits, BOOL as
     * 0/1). On success result[0] receives the output names (String[]), result[1] their dtypes (int[]),
     * result[2] their shapes (long[][]) and result[3] their data (Object[], arrays as for the inputs).
     */
    public static native int sessionRunMany(long session, String[] names, int[] dtypes, long[][] shapes,
            Object[] data, Object[] result);

    /**
     * Refines the student; exactly one of cachePath and teacherLogits is non-null. listener may
     * be null; stepsDone[0] receives the steps completed.
     */
    public static native int distill(String studentPath, float[] inputs, long[] inputShape, String cachePath,
            float[] teacherLogits, String outPath, long steps, ProgressListener listener, long[] stepsDone);
}
