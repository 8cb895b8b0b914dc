package dev.alembic;

/** Called after every refinement step, on the refining thread; return false to cancel. */
@FunctionalInterface
public interface ProgressListener {
    boolean onStep(long step, long steps, float loss);
}
