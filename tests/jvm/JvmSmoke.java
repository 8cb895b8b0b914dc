import dev.alembic.NativeLib;

/**
 * Host JVM smoke test of the JNI layer (run by tests/integration/ffi.rs):
 *   java -Djava.library.path=DIR JvmSmoke MODELS_DIR SCRATCH
 * Loads the student, runs one zero image, refines 3 steps with a listener, cancels via the
 * listener, and checks that misuse yields codes and messages. Prints "jvm: ok" on success.
 */
public final class JvmSmoke {
    static int failures = 0;

    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("JvmSmoke: check failed: " + what + " (last error: " + NativeLib.lastError() + ")");
            failures++;
        }
    }

    public static void main(String[] args) {
        String student = args[0] + "/student.onnx", scratch = args[1];
        check(!NativeLib.version().isEmpty(), "version");
        long[] h = new long[1];
        check(NativeLib.modelLoad(student, h) == 0 && h[0] != 0, "load");
        long model = h[0];
        check(NativeLib.sessionNew(model, null, h) == 0 && h[0] != 0, "session");
        long session = h[0];
        NativeLib.modelFree(model);
        Object[] result = new Object[2];
        check(NativeLib.sessionRun(session, "input", new float[2 * 64], new long[] {2, 1, 8, 8}, result) == 0, "run");
        float[] y = (float[]) result[0];
        long[] shape = (long[]) result[1];
        check(y.length == 20 && shape.length == 2 && shape[0] == 2 && shape[1] == 10, "output shape");
        check(NativeLib.sessionRun(session, "input", new float[63], new long[] {1, 1, 8, 8}, result) == 2, "bad len");
        check(NativeLib.lastError().contains("63"), "bad len message");
        check(NativeLib.sessionRun(0, "input", new float[64], new long[] {1, 1, 8, 8}, result) == 1, "null session");
        check(NativeLib.modelLoad(null, h) == 1, "null path");
        check(NativeLib.modelLoad(scratch + "/missing.onnx", h) == 4, "missing file");

        // Refinement on 16 random-ish images against made-up teacher logits.
        int n = 16;
        float[] x = new float[n * 64];
        float[] teacher = new float[n * 10];
        for (int i = 0; i < x.length; i++) x[i] = (i * 7919 % 17) / 16.0f;
        for (int i = 0; i < n; i++) teacher[i * 10 + i % 10] = 5.0f;
        int[] calls = {0};
        long[] done = new long[1];
        int rc = NativeLib.distill(student, x, new long[] {n, 1, 8, 8}, null, teacher, scratch + "/jvm.onnx", 3,
                (step, steps, loss) -> { calls[0]++; return true; }, done);
        check(rc == 0 && calls[0] == 3 && done[0] == 3, "refine rc " + rc + " calls " + calls[0]);
        check(new java.io.File(scratch + "/jvm.onnx").isFile(), "refined model written");
        calls[0] = 0;
        rc = NativeLib.distill(student, x, new long[] {n, 1, 8, 8}, null, teacher, scratch + "/jvm2.onnx", 30,
                (step, steps, loss) -> ++calls[0] < 2, done);
        check(rc == 9 && calls[0] == 2 && done[0] == 2, "cancel rc " + rc + " calls " + calls[0]);
        try {
            NativeLib.distill(student, x, new long[] {n, 1, 8, 8}, null, teacher, scratch + "/jvm3.onnx", 30,
                    (step, steps, loss) -> { throw new IllegalStateException("listener bug"); }, done);
            check(false, "listener exception not rethrown");
        } catch (IllegalStateException e) {
            check(e.getMessage().equals("listener bug"), "listener exception");
        }
        NativeLib.sessionFree(session);
        if (failures > 0) {
            System.err.println("JvmSmoke: " + failures + " checks failed");
            System.exit(1);
        }
        System.out.println("jvm: ok");
    }
}
