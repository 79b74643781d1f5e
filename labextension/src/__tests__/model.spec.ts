import { HPCModel, SlurmTrouble } from '../model';
import { IClusterEntry, IClusterStatus, IStatus } from '../tokens';

/**
 * A fake of the server's REST API: every call is recorded and answered when the test says
 * (so answers can come back in any order), or at once where an answer is set for its path.
 */
class FakeServer {
  calls: { path: string; init?: RequestInit }[] = [];
  waiting: { path: string; resolve: (v: any) => void; reject: (e: any) => void }[] = [];
  answers = new Map<string, () => any>();

  request = <T>(path: string, init?: RequestInit): Promise<T> => {
    this.calls.push({ path, init });
    const key = path.split('?')[0];
    const answer = this.answers.get(key);
    if (answer) {
      try {
        return Promise.resolve(answer());
      } catch (error) {
        return Promise.reject(error);
      }
    }
    return new Promise<T>((resolve, reject) => this.waiting.push({ path, resolve, reject }));
  };

  /** Answer the oldest waiting call to path (its index among those waiting: nth). */
  answer(path: string, value: any, nth = 0): void {
    const waiting = this.waiting.filter(w => w.path.split('?')[0] === path);
    const call = waiting[nth];
    if (!call) {
      throw new Error(`no call to ${path} waits`);
    }
    this.waiting.splice(this.waiting.indexOf(call), 1);
    call.resolve(value);
  }

  count(path: string): number {
    return this.calls.filter(c => c.path.split('?')[0] === path).length;
  }
}

const CONFIG: IStatus = {
  activeHpc: null,
  config: {
    defaultHpc: 'gemini',
    defaultCpus: '2',
    defaultMem: '4G',
    defaultTime: '01:00:00',
    maxCpus: 64,
    clusters: ['gemini', 'apollo'],
    clusterOptions: {}
  }
};

function status(entries: Record<string, IClusterEntry>, activeHpc: string | null = null) {
  return {
    activeHpc,
    updatedAt: '2026-12-01T10:00:00Z',
    cached: true,
    cacheAge: 0,
    cacheTtl: 120,
    ...entries
  } as IClusterStatus;
}

const idle: IClusterEntry = { status: 'idle' };
const running = (jobId: string): IClusterEntry => ({
  status: 'running',
  jobId,
  node: 'vm',
  timeLeftSeconds: 3600,
  url: '/hpc/gemini/code/'
});
const pending: IClusterEntry = { status: 'pending', jobId: '7', reason: 'Resources' };

/** Let every settled promise run its callbacks. */
async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await Promise.resolve();
  }
}

describe('HPCModel', () => {
  let server: FakeServer;
  let model: HPCModel;

  beforeEach(() => {
    jest.useFakeTimers();
    server = new FakeServer();
    server.answers.set('status', () => CONFIG);
    model = new HPCModel({ request: server.request });
    model.settings = { warnMinutesLeft: 15, pollSeconds: 30, pendingPollSeconds: 5 };
  });

  afterEach(() => {
    model.dispose();
    jest.useRealTimers();
  });

  it('reads the configuration, then polls cluster-status from the server cache', async () => {
    const changes: string[] = [];
    model.changed.connect((_, c) => changes.push(`${c.hpc}:${c.what}`));
    server.answers.set('cluster-status', () => status({ gemini: idle, apollo: idle }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(model.clusters).toEqual(['gemini', 'apollo']);
    expect(changes[0]).toBe('null:config');
    expect(model.state('gemini').entry?.status).toBe('idle');
    // 10 minutes idle: one call per pollSeconds, never one that skips the server's cache.
    await jest.advanceTimersByTimeAsync(10 * 60 * 1000);
    const polls = server.calls.filter(c => c.path.startsWith('cluster-status'));
    expect(polls.length).toBeGreaterThanOrEqual(20);
    expect(polls.length).toBeLessThanOrEqual(21);
    expect(polls.every(c => c.path === 'cluster-status')).toBe(true);
  });

  it('drops an answer older than the newest one applied', async () => {
    await model.start();
    const first = model.refresh(); // asked first, answered last
    const second = model.refresh();
    server.answer('cluster-status', status({ gemini: running('42') }), 1);
    expect(await second).toBe(true);
    server.answer('cluster-status', status({ gemini: idle }), 0);
    expect(await first).toBe(false);
    expect(model.state('gemini').entry?.status).toBe('running');
  });

  it('drops an answer asked before a stop: no false "session has ended"', async () => {
    server.answers.set('cluster-status', () => status({ gemini: running('42') }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    server.answers.delete('cluster-status');
    const ended: string[] = [];
    model.ended.connect((_, e) => ended.push(e.jobId));
    const before = model.refresh(); // in flight when the user stops
    let stopped = false;
    server.answers.set('stop/gemini', () => {
      stopped = true;
      return {};
    });
    const stop = model.stop('gemini', true);
    await flush();
    expect(stopped).toBe(true);
    server.answer('cluster-status', status({ gemini: idle }), 1); // the stop's own look
    await stop;
    server.answer('cluster-status', status({ gemini: running('42') }), 0); // the old one
    expect(await before).toBe(false);
    expect(model.state('gemini').entry?.status).toBe('idle');
    expect(ended).toEqual([]);
  });

  it('says when a running session ends without the sidebar stopping it', async () => {
    server.answers.set('cluster-status', () => status({ gemini: running('42') }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    const ended: string[] = [];
    model.ended.connect((_, e) => ended.push(`${e.hpc} ${e.jobId}`));
    server.answers.set('cluster-status', () => status({ gemini: idle }));
    await model.refresh();
    expect(ended).toEqual(['gemini 42']);
  });

  it('says why a running session ended, when the server knows', async () => {
    server.answers.set('cluster-status', () => status({ gemini: running('42') }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    const ended: (string | null)[] = [];
    model.ended.connect((_, e) => ended.push(e.reason));
    server.answers.set('cluster-status', () =>
      status({
        gemini: {
          ...idle,
          lastEnd: { jobId: '42', reason: 'walltime', at: '2026-12-01T10:00:00Z' }
        }
      })
    );
    await model.refresh();
    expect(ended).toEqual(['walltime']);
  });

  it('warns once before an idle cancel, and again only after the job was used', async () => {
    const at = (minutes: number) => new Date(Date.now() + minutes * 60_000).toISOString();
    const withIdle = (minutes: number, idle: number) =>
      status({ gemini: { ...running('42'), idleSeconds: idle, idleCancelAt: at(minutes) } });
    server.answers.set('cluster-status', () => withIdle(30, 60));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    const warned: string[] = [];
    model.idleWarning.connect((_, w) =>
      warned.push(`${w.jobId} ${w.idleMinutes} ${w.cancelInMinutes}`)
    );
    expect(warned).toEqual([]); // 30 minutes left: more than the 5 of the warning
    server.answers.set('cluster-status', () => withIdle(4, 56 * 60));
    await model.refresh();
    await model.refresh();
    expect(warned).toEqual(['42 56 4']); // once, not per answer
    // Keep it: the server's clock starts again; a later idle spell warns again.
    server.answers.set('keep/gemini', () => ({ status: 'kept', hpc: 'gemini' }));
    server.answers.set('cluster-status', () => withIdle(60, 0));
    await model.keep('gemini');
    expect(server.calls.some(c => c.path === 'keep/gemini' && c.init?.method === 'POST')).toBe(
      true
    );
    server.answers.set('cluster-status', () => withIdle(2, 58 * 60));
    await model.refresh();
    expect(warned).toEqual(['42 56 4', '42 58 2']);
  });

  it('sends a new time limit and shows what SLURM then says', async () => {
    server.answers.set('cluster-status', () => status({ gemini: running('42') }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    server.answers.set('time/gemini', () => ({
      status: 'updated',
      hpc: 'gemini',
      jobId: '42',
      timeLimit: '00:30:00',
      change: 'lower'
    }));
    server.answers.set('cluster-status', () =>
      status({ gemini: { ...running('42'), timeLimit: '00:30:00' } })
    );
    const reply = await model.changeTime('gemini', '00:30:00');
    expect(reply.timeLimit).toBe('00:30:00');
    const call = server.calls.find(c => c.path === 'time/gemini')!;
    expect(JSON.parse(call.init!.body as string)).toEqual({ time: '00:30:00' });
    expect(model.state('gemini').entry?.timeLimit).toBe('00:30:00');
    expect(model.state('gemini').busy).toBe(false);
  });

  it('stands by while the panel is closed, and asks at once when it opens again', async () => {
    server.answers.set('cluster-status', () => status({ gemini: idle }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    const before = server.count('cluster-status');
    model.visible = false;
    await jest.advanceTimersByTimeAsync(10 * 60 * 1000);
    expect(server.count('cluster-status')).toBe(before);
    model.visible = true;
    await jest.advanceTimersByTimeAsync(0);
    expect(server.count('cluster-status')).toBe(before + 1);
  });

  it('backs off while SLURM is slow or failing, and comes back when it answers', async () => {
    const stale = { ...running('42'), stale: true, error: 'squeue timed out' };
    server.answers.set('cluster-status', () => status({ gemini: stale }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(model.poll.state.phase).toBe('rejected');
    expect(model.poll.state.payload).toBeInstanceOf(SlurmTrouble);
    // The held session still shows, as last known.
    expect(model.state('gemini').entry?.status).toBe('running');
    await jest.advanceTimersByTimeAsync(30 * 60 * 1000);
    const slow = server.count('cluster-status');
    expect(slow).toBeLessThan(30); // 60 at the normal interval; backing off to 5 minutes
    expect(model.poll.state.interval).toBeGreaterThan(30 * 1000);
    server.answers.set('cluster-status', () => status({ gemini: running('42') }));
    await jest.advanceTimersByTimeAsync(5 * 60 * 1000);
    expect(model.poll.state.phase === 'reconnected' || model.poll.state.phase === 'resolved').toBe(
      true
    );
    expect(model.poll.state.interval).toBe(30 * 1000);
  });

  it('asks sooner while a job pends, still from the server cache', async () => {
    server.answers.set('cluster-status', () => status({ gemini: pending }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    expect(model.poll.frequency.interval).toBe(5000);
    const before = server.count('cluster-status');
    await jest.advanceTimersByTimeAsync(60 * 1000);
    const calls = server.calls.slice(-(server.count('cluster-status') - before));
    expect(calls.length).toBeGreaterThanOrEqual(11);
    expect(calls.every(c => c.path === 'cluster-status')).toBe(true);
    server.answers.set('cluster-status', () => status({ gemini: idle }));
    await jest.advanceTimersByTimeAsync(5000);
    expect(model.poll.frequency.interval).toBe(30 * 1000);
  });

  it('follows a launch through its steps, and keeps what it asked for', async () => {
    server.answers.set('cluster-status', () => status({ gemini: idle }));
    await model.start();
    await jest.advanceTimersByTimeAsync(0);
    server.answers.delete('cluster-status');
    const launched: string[] = [];
    model.launched.connect((_, l) => launched.push(`${l.hpc} ${l.values.cpus}`));
    const launch = model.launch('gemini', { cpus: '4' });
    await flush();
    expect(model.state('gemini')).toMatchObject({ busy: true, progress: 'submitted' });
    const launchCall = server.calls.find(c => c.path === 'launch')!;
    expect(JSON.parse(launchCall.init!.body as string)).toEqual({ hpc: 'gemini', cpus: '4' });
    // The poll, sooner during a launch, sees the job queued, then running.
    await jest.advanceTimersByTimeAsync(0);
    server.answer('cluster-status', status({ gemini: pending }));
    await flush();
    expect(model.state('gemini').progress).toBe('pending');
    await jest.advanceTimersByTimeAsync(5000);
    server.answer('cluster-status', status({ gemini: running('7') }));
    await flush();
    expect(model.state('gemini').progress).toBe('running');
    server.answer('launch', { status: 'running', jobId: '7', node: 'vm', hpc: 'gemini' });
    await flush();
    server.answer('cluster-status', status({ gemini: running('7') }));
    await launch;
    expect(model.state('gemini')).toMatchObject({ busy: false, progress: 'ready' });
    expect(model.lastLaunch).toEqual({ gemini: { cpus: '4' } });
    expect(launched).toEqual(['gemini 4']);
    await jest.advanceTimersByTimeAsync(5000);
    expect(model.state('gemini').progress).toBe(null);
  });

  it('brings partitions that were still being asked into the forms', async () => {
    const asking = {
      partitions: null,
      partitionsPending: true,
      accounts: null,
      qos: null,
      presets: {},
      defaultPartition: null,
      defaultAccount: null,
      defaultQos: null
    };
    const partitions = [
      {
        name: 'debug',
        default: true,
        maxTime: '12:00:00',
        maxTimeSeconds: 43200,
        maxCpusPerNode: 16,
        maxMemPerNode: '195G',
        maxMemPerNodeMb: 200000,
        gpus: {},
        state: 'up'
      }
    ];
    let answer: IStatus = {
      ...CONFIG,
      config: { ...CONFIG.config, clusterOptions: { gemini: asking } }
    };
    server.answers.set('status', () => answer);
    server.answers.set('cluster-status', () => status({ gemini: idle }));
    const options: string[] = [];
    model.changed.connect((_, c) => c.what === 'options' && options.push(c.hpc!));
    await model.start();
    await jest.advanceTimersByTimeAsync(1000);
    expect(options).toEqual([]); // still asking
    answer = {
      ...CONFIG,
      config: {
        ...CONFIG.config,
        clusterOptions: { gemini: { ...asking, partitionsPending: false, partitions } }
      }
    };
    await jest.advanceTimersByTimeAsync(2000);
    expect(options).toEqual(['gemini']);
    expect(model.options('gemini')?.partitions?.[0].name).toBe('debug');
    const asked = server.count('status');
    await jest.advanceTimersByTimeAsync(60 * 1000);
    expect(server.count('status')).toBe(asked); // not asked again once it came
  });
});
